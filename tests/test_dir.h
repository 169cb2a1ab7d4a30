// Scratch directories for tests. ctest runs every test in its own process, many at once
// (`ctest -j`), so a fixed file name under the temp dir is shared by tests that run side by side
// and they overwrite each other's files. Every test writes only inside a directory of its own:
//   <TempDir>/qat_<Suite.Test>_<pid>_XXXXXX
// made by mkdtemp (unique even when two processes run the same test) and named after the test
// (a leftover of a crashed test says which one). It is removed when the test ends.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace qat::testing_util {

// A fresh, empty directory for the running test, removed (recursively) by the destructor.
class TestDir {
 public:
  TestDir() : owner_(::getpid()) {
    std::string pattern = ::testing::TempDir();
    if (!pattern.empty() && pattern.back() != '/') pattern += '/';
    pattern += "qat_" + TestName() + "_" + std::to_string(owner_) + "_XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    }
    dir_ = pattern;
  }
  // Only the process that made it removes it: a forked child that unwinds leaves it alone.
  ~TestDir() {
    std::error_code ignored;
    if (::getpid() == owner_) std::filesystem::remove_all(dir_, ignored);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::string& dir() const { return dir_; }
  // A path inside the directory (nothing is created).
  std::string path(std::string_view name) const { return dir_ + "/" + std::string(name); }

  // "Suite.Test" of the running test in characters safe in a file name ('/' of parameterized
  // tests and the like become '_'), at most 96 of them; "no_test" outside a test.
  static std::string TestName() {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "no_test";
    for (char& c : name) {
      const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
      if (!safe) c = '_';
    }
    return name.substr(0, 96);
  }

 private:
  pid_t owner_;
  std::string dir_;
};

// The running test's TestDir, made on first use and removed when the test ends (a gtest event
// listener, appended on first use, resets it): for helpers that hand out paths, not objects.
// Every call within one test returns the same directory. Called outside a test (no current
// test), it is removed at the next test's end or at the program's end.
inline const TestDir& CurrentTestDir() {
  struct Owner : ::testing::EmptyTestEventListener {
    std::unique_ptr<TestDir> dir;
    void OnTestEnd(const ::testing::TestInfo&) override { dir.reset(); }
    void OnTestProgramEnd(const ::testing::UnitTest&) override { dir.reset(); }
  };
  static Owner* const owner = [] {
    auto* o = new Owner;  // owned by gtest from here on
    ::testing::UnitTest::GetInstance()->listeners().Append(o);
    return o;
  }();
  if (!owner->dir) owner->dir = std::make_unique<TestDir>();
  return *owner->dir;
}

}  // namespace qat::testing_util
