// Tests of the byte tokenizer, token shards, `prep` and the window sampler.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "data/mixture.h"
#include "data/prep.h"
#include "data/tokens.h"
#include "kernels/safetensors.h"
#include "test_dir.h"

namespace qat::data {
namespace {

// Checks that `text` contains `part`; prints both when it does not.
#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << std::string(text) << "\" does not contain \"" << (part) << "\""

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  auto bytes = kernels::ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

int32_t HeaderField(const std::string& file, int i) {
  int32_t v;
  std::memcpy(&v, file.data() + 4 * i, 4);
  return v;
}

void SetHeaderField(std::string* file, int i, int32_t v) { std::memcpy(&(*file)[4 * i], &v, 4); }

// ---------------------------------------------------------------------------------------------
// Tokenizer

TEST(ByteTokenizerTest, RoundTripsBytesIncludingMultiByteUtf8) {
  ByteTokenizer tok;
  const std::string text = std::string("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") + '\0' + "\xFF";
  const std::vector<int32_t> ids = tok.Encode(text);
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0,
                                       0xFF}));
  EXPECT_EQ(tok.Decode(ids), text);
  EXPECT_TRUE(tok.Encode("").empty());
  EXPECT_EQ(ByteTokenizer::kVocabSize, 258);
}

TEST(ByteTokenizerTest, DecodeDropsSpecialAndOutOfRangeIds) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.Decode({ByteTokenizer::kBos, 'h', 'i', ByteTokenizer::kEos, -1, 300, '!'}), "hi!");
}

// ---------------------------------------------------------------------------------------------
// Shards

TEST(ShardTest, RoundTripsUint16Layout) {
  const testing_util::TestDir tmp;
  const std::string path = tmp.path("s.bin");
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 1000; ++i) tokens.push_back((i * 7919) % 65536);
  tokens.push_back(65535);
  ASSERT_TRUE(WriteShard(path, tokens).ok());
  const std::string file = ReadBytes(path);
  ASSERT_EQ(file.size(), 1024 + 2 * tokens.size());
  EXPECT_EQ(HeaderField(file, 0), 20240520);
  EXPECT_EQ(HeaderField(file, 1), 1);
  EXPECT_EQ(HeaderField(file, 2), static_cast<int32_t>(tokens.size()));
  auto back = ReadShard(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, tokens);
}

TEST(ShardTest, RoundTripsUint32LayoutForLargeIds) {
  const testing_util::TestDir tmp;
  const std::string path = tmp.path("s.bin");
  const std::vector<int32_t> tokens = {0, 65535, 65536, 1 << 20, 2147483647, 5};
  ASSERT_TRUE(WriteShard(path, tokens).ok());
  const std::string file = ReadBytes(path);
  ASSERT_EQ(file.size(), 1024 + 4 * tokens.size());
  EXPECT_EQ(HeaderField(file, 0), 20240801);
  EXPECT_EQ(HeaderField(file, 1), 7);
  EXPECT_EQ(HeaderField(file, 2), 6);
  EXPECT_EQ(HeaderField(file, 3), 0);
  auto back = ReadShard(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, tokens);
}

TEST(ShardTest, RoundTripsEmptyShardAndRejectsNegativeIds) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  ASSERT_TRUE(WriteShard(dir + "/empty.bin", {}).ok());
  auto back = ReadShard(dir + "/empty.bin");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->empty());
  auto s = WriteShard(dir + "/neg.bin", {1, -3});
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), dir + "/neg.bin");
}

// Writes a valid shard, lets `corrupt` change its bytes, and returns ReadShard's error.
template <typename Corrupt>
std::string ShardError(const std::string& path, const std::vector<int32_t>& tokens,
                       Corrupt corrupt) {
  EXPECT_TRUE(WriteShard(path, tokens).ok());
  std::string file = ReadBytes(path);
  corrupt(&file);
  WriteText(path, file);
  auto r = ReadShard(path);
  if (r.ok()) return "(read without error)";
  const std::string message(r.status().message());
  EXPECT_CONTAINS(message, path);
  return message;
}

TEST(ShardTest, RejectsCorruptShardsNamingFileAndOffset) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::string path = dir + "/bad.bin";
  const std::vector<int32_t> tokens = {1, 2, 3, 4};

  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { f->resize(100); }),
                  "byte offset 100");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { f->resize(1027); }),
                  "byte offset 8");  // count says 4 tokens, 1.5 are there
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { f->append("xy"); }),
                  "header says 4 tokens");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 2, 5); }),
                  "byte offset 8");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 2, -1); }),
                  "negative");
  const std::string magic =
      ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 0, 12345); });
  EXPECT_CONTAINS(magic, "magic");
  EXPECT_CONTAINS(magic, "byte offset 0");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 1, 2); }),
                  "version");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 200, 1); }),
                  "header field [200]");
  EXPECT_CONTAINS(ShardError(path, tokens, [](std::string* f) { SetHeaderField(f, 3, 1); }),
                  "byte offset 12");
  // uint32 layout: the high count word must agree with the size too, and ids must fit int32.
  const std::vector<int32_t> wide = {70000, 1};
  EXPECT_CONTAINS(ShardError(path, wide, [](std::string* f) { SetHeaderField(f, 3, 1); }),
                  "byte offset 8");
  EXPECT_CONTAINS(ShardError(path, wide, [](std::string* f) { std::memset(&(*f)[1024], 0xFF, 4); }),
                  "byte offset 1024");

  auto missing = ReadShard(dir + "/missing.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), dir + "/missing.bin");
}

// ---------------------------------------------------------------------------------------------
// Prep

// The documents in a shard written by Prep: the bytes between each BOS and its EOS.
std::vector<std::string> DocumentsIn(const std::string& shard) {
  auto tokens = ReadShard(shard);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  std::vector<std::string> docs;
  bool open = false;
  for (int32_t t : *tokens) {
    if (t == ByteTokenizer::kBos) {
      EXPECT_FALSE(open) << "BOS inside a document";
      open = true;
      docs.emplace_back();
    } else if (t == ByteTokenizer::kEos) {
      EXPECT_TRUE(open) << "EOS outside a document";
      open = false;
    } else {
      EXPECT_TRUE(open) << "token outside a document";
      if (open) docs.back().push_back(static_cast<char>(t));
    }
  }
  EXPECT_FALSE(open) << "unterminated document";
  return docs;
}

struct FortuneFiles {
  std::vector<std::string> inputs;
  std::multiset<std::string> documents;  // what Prep should find
};

FortuneFiles MakeFortuneFiles(const std::string& dir) {
  FortuneFiles f;
  f.inputs = {dir + "/a.txt", dir + "/b.txt"};
  // Empty and blank documents are dropped; "%%" and " %" are text, not separators.
  WriteText(f.inputs[0], "one\n%\ntwo\n\nlines\n%\n%\n  \n%\n%%\n %\n%\nthree");
  WriteText(f.inputs[1], "four\r\n%\r\nfive\n%\n");
  f.documents = {"one\n", "two\n\nlines\n", "%%\n %\n", "three", "four\r\n", "five\n"};
  return f;
}

TEST(PrepTest, SplitsFortuneFilesIntoDisjointTrainAndVal) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const FortuneFiles files = MakeFortuneFiles(dir);
  PrepOptions options;
  options.inputs = files.inputs;
  options.out_dir = dir + "/out/nested";  // created by Prep
  options.fortune_format = true;
  options.val_fraction = 0.3;
  options.seed = 7;
  auto stats = Prep(options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->documents, 6);
  EXPECT_EQ(stats->train_documents + stats->val_documents, 6);
  EXPECT_GE(stats->train_documents, 1);
  EXPECT_GE(stats->val_documents, 1);

  const std::vector<std::string> train = DocumentsIn(options.out_dir + "/train.bin");
  const std::vector<std::string> val = DocumentsIn(options.out_dir + "/val.bin");
  EXPECT_EQ(static_cast<int64_t>(train.size()), stats->train_documents);
  EXPECT_EQ(static_cast<int64_t>(val.size()), stats->val_documents);
  std::multiset<std::string> all(train.begin(), train.end());
  all.insert(val.begin(), val.end());
  EXPECT_EQ(all, files.documents);  // every document in exactly one split

  int64_t train_tokens = 0, val_tokens = 0;
  for (const auto& d : train) train_tokens += static_cast<int64_t>(d.size()) + 2;
  for (const auto& d : val) val_tokens += static_cast<int64_t>(d.size()) + 2;
  EXPECT_EQ(stats->train_tokens, train_tokens);
  EXPECT_EQ(stats->val_tokens, val_tokens);
}

TEST(PrepTest, SameSeedGivesSameSplitAndSeedsMatter) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const FortuneFiles files = MakeFortuneFiles(dir);
  PrepOptions options;
  options.inputs = files.inputs;
  options.fortune_format = true;
  options.val_fraction = 0.5;
  std::set<std::string> distinct_val_files;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    options.seed = seed;
    options.out_dir = dir + "/first";
    const absl::StatusOr<PrepStats> first = Prep(options);
    options.out_dir = dir + "/second";
    const absl::StatusOr<PrepStats> second = Prep(options);
    ASSERT_EQ(first.ok(), second.ok()) << seed;
    if (!first.ok()) {  // six documents: a split may come out empty, alike both times
      EXPECT_EQ(first.status(), second.status());
      continue;
    }
    const std::string val = ReadBytes(dir + "/first/val.bin");
    EXPECT_EQ(val, ReadBytes(dir + "/second/val.bin")) << seed;
    EXPECT_EQ(ReadBytes(dir + "/first/train.bin"), ReadBytes(dir + "/second/train.bin")) << seed;
    distinct_val_files.insert(val);
  }
  EXPECT_GT(distinct_val_files.size(), 1u);  // the seed picks the documents
}

TEST(PrepTest, EmptySplitsAreErrorsThatSayWhyAndPlainFilesAreOneDocument) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  WriteText(dir + "/x.txt", "first file\n%\nstill first\n");
  WriteText(dir + "/y.txt", "second file");
  WriteText(dir + "/blank.txt", " \n\n");
  PrepOptions options;
  options.inputs = {dir + "/x.txt", dir + "/blank.txt", dir + "/y.txt"};
  options.out_dir = dir + "/out";
  options.fortune_format = false;  // whole files are documents; "%" is just text
  options.val_fraction = 0;        // no validation split: val.bin is empty, and that is fine
  auto stats = Prep(options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->documents, 2);
  EXPECT_EQ(stats->empty_documents, 1);
  EXPECT_EQ(stats->train_documents, 2);
  EXPECT_EQ(DocumentsIn(dir + "/out/train.bin"),
            (std::vector<std::string>{"first file\n%\nstill first\n", "second file"}));
  EXPECT_TRUE(DocumentsIn(dir + "/out/val.bin").empty());

  // One document cannot fill two splits: an error that says why, and nothing is written.
  options.inputs = {dir + "/y.txt"};
  options.out_dir = dir + "/single";
  options.val_fraction = 0.5;
  auto single = Prep(options);
  ASSERT_FALSE(single.ok());
  EXPECT_TRUE(absl::StrContains(single.status().message(), "no document went to"))
      << single.status();
  EXPECT_TRUE(absl::StrContains(single.status().message(), "by a hash of its text") ||
              absl::StrContains(single.status().message(), "smaller --val-fraction"))
      << single.status();
  EXPECT_FALSE(std::filesystem::exists(dir + "/single/train.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/single/val.bin"));
}

TEST(PrepTest, ErrorsNameTheInput) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  PrepOptions options;
  options.inputs = {dir + "/nope.txt"};
  options.out_dir = dir + "/out";
  auto missing = Prep(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), dir + "/nope.txt");

  WriteText(dir + "/blank.txt", "\n%\n\n");
  options.inputs = {dir + "/blank.txt"};
  options.fortune_format = true;
  auto empty = Prep(options);
  ASSERT_FALSE(empty.ok());
  EXPECT_CONTAINS(empty.status().message(), dir + "/blank.txt");

  options.val_fraction = 1.5;
  EXPECT_FALSE(Prep(options).ok());
}

// Corpus dumps (issue 18): JSON Lines, gzip and zstd, directories and globs, bad records, threads.
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\', out += c;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// 60 documents as fortune text, as JSON Lines (with another key first), compressed copies.
std::vector<std::string> WriteCorpusForms(const std::string& dir) {
  std::string text, jsonl;
  for (int i = 0; i < 60; ++i) {
    const std::string doc = "document " + std::to_string(i) + " says \"hi\"\nand é " +
                            std::string(static_cast<size_t>(i % 7), 'x') + "\n";
    text += doc + "%\n";
    jsonl += "{\"id\": " + std::to_string(i) + ", \"text\": " + JsonString(doc) + "}\n";
  }
  std::filesystem::create_directories(dir + "/nested/deeper");
  WriteText(dir + "/docs.txt", text);
  WriteText(dir + "/docs.jsonl", jsonl);
  WriteText(dir + "/nested/deeper/docs.jsonl", jsonl);
  EXPECT_EQ(std::system(("gzip -k -f " + dir + "/docs.jsonl").c_str()), 0);
  EXPECT_EQ(
      std::system(("zstd -q -f -k " + dir + "/docs.jsonl -o " + dir + "/docs.jsonl.zst").c_str()),
      0);
  EXPECT_EQ(std::system(("gzip -f " + dir + "/nested/deeper/docs.jsonl").c_str()), 0);
  return {dir + "/docs.txt",       dir + "/docs.jsonl", dir + "/docs.jsonl.gz",
          dir + "/docs.jsonl.zst", dir + "/nested",     dir + "/docs.jsonl.z*"};
}

TEST(PrepTest, JsonlGzipZstdDirectoriesAndGlobsGiveTheShardsOfPlainText) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::vector<std::string> forms = WriteCorpusForms(dir);
  PrepOptions options;
  options.val_fraction = 0.2;
  options.seed = 3;
  std::string want_train, want_val;
  for (size_t i = 0; i < forms.size(); ++i) {
    options.inputs = {forms[i]};
    options.fortune_format = i == 0;
    options.out_dir = dir + "/out" + std::to_string(i);
    absl::StatusOr<PrepStats> stats = Prep(options);
    ASSERT_TRUE(stats.ok()) << forms[i] << ": " << stats.status();
    EXPECT_EQ(stats->documents, 60) << forms[i];
    const std::string train = ReadBytes(options.out_dir + "/train.bin");
    const std::string val = ReadBytes(options.out_dir + "/val.bin");
    if (i == 0) {
      want_train = train, want_val = val;
      EXPECT_GT(stats->val_documents, 3);
      EXPECT_GT(stats->train_documents, 30);
    } else {
      EXPECT_EQ(train, want_train) << forms[i];
      EXPECT_EQ(val, want_val) << forms[i];
    }
  }
  // Several keys, joined by a blank line; the split follows the text, not the file order.
  WriteText(dir + "/two.jsonl", "{\"title\": \"T\", \"text\": \"body\"}\n");
  options.inputs = {dir + "/two.jsonl", dir + "/docs.txt"};
  options.fortune_format = true;  // applies to the text file only
  options.json_keys = {"title", "text"};
  options.val_fraction = 0;
  options.out_dir = dir + "/keys";
  ASSERT_TRUE(Prep(options).ok());
  EXPECT_EQ(DocumentsIn(dir + "/keys/train.bin").front(), "T\n\nbody");
}

TEST(PrepTest, ThreadsBatchesAndShardSizeNeverChangeTheTokens) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  WriteCorpusForms(dir);
  PrepOptions options;
  options.inputs = {dir + "/docs.jsonl.zst"};
  options.val_fraction = 0.2;
  options.out_dir = dir + "/whole";
  options.threads = 1;
  ASSERT_TRUE(Prep(options).ok());
  const std::string train = ReadBytes(dir + "/whole/train.bin");
  const std::string val = ReadBytes(dir + "/whole/val.bin");
  std::vector<std::string> first_shards;
  for (int threads : {1, 2, 3}) {
    for (size_t batch : {size_t{100}, size_t{1} << 20}) {
      options.threads = threads;
      options.batch_bytes = batch;
      options.out_dir = dir + "/t" + std::to_string(threads) + "b" + std::to_string(batch);
      options.shard_tokens = 0;
      absl::StatusOr<PrepStats> stats = Prep(options);
      ASSERT_TRUE(stats.ok()) << stats.status();
      EXPECT_EQ(stats->threads, threads);
      EXPECT_EQ(ReadBytes(options.out_dir + "/train.bin"), train) << threads << " " << batch;
      EXPECT_EQ(ReadBytes(options.out_dir + "/val.bin"), val) << threads << " " << batch;
      // Sharded: whole documents per shard, and the shards' tokens are train.bin's.
      options.shard_tokens = 300;
      options.out_dir += "-sharded";
      stats = Prep(options);
      ASSERT_TRUE(stats.ok()) << stats.status();
      EXPECT_GT(stats->train_files.size(), 2u);
      std::vector<int32_t> joined;
      std::vector<std::string> contents;
      for (const std::string& f : stats->train_files) {
        std::vector<int32_t> part = ReadShard(f).value();
        EXPECT_EQ(part.back(), ByteTokenizer::kEos) << f;  // ends at a document's end
        joined.insert(joined.end(), part.begin(), part.end());
        contents.push_back(ReadBytes(f));
      }
      EXPECT_EQ(joined, ReadShard(dir + "/whole/train.bin").value());
      if (first_shards.empty()) first_shards = contents;
      EXPECT_EQ(contents, first_shards) << threads << " " << batch;
      EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train.bin"));
    }
  }
}

TEST(PrepTest, BadRecordsStopPrepNamingFileLineAndOffsetOrAreCounted) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  std::string good;
  for (int i = 0; i < 40; ++i) good += "{\"text\": \"good " + std::to_string(i) + "\"}\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"text\": \"unterminated}", "malformed JSON"},
      {"[\"text\"]", "not a JSON object"},
      {"{\"body\": \"x\"}", "no key \"text\""},
      {"{\"text\": 42}", "\"text\" is a number, expected a string"},
      {"{\"text\": null}", "\"text\" is null, expected a string"},
      {"{\"text\": \"bad \xff byte\"}", "UTF-8"},
  };
  std::string all = good;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string file = dir + "/case" + std::to_string(i) + ".jsonl";
    WriteText(file, good + cases[i].first + "\n" + good);
    all += cases[i].first + "\n";
    PrepOptions options;
    options.inputs = {file};
    options.out_dir = dir + "/out" + std::to_string(i);
    absl::StatusOr<PrepStats> stats = Prep(options);
    ASSERT_FALSE(stats.ok()) << cases[i].first;
    const std::string m(stats.status().message());
    EXPECT_CONTAINS(m, file + ":41");
    EXPECT_CONTAINS(m, "byte offset ");
    EXPECT_CONTAINS(m, cases[i].second);
    EXPECT_CONTAINS(m, "--skip-bad");
    EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train.bin"));
  }
  // The offset is the line's (or, for malformed JSON, the bad byte's) in the file.
  {
    PrepOptions options;
    options.inputs = {dir + "/case2.jsonl"};
    options.out_dir = dir + "/offset";
    EXPECT_CONTAINS(std::string(Prep(options).status().message()),
                    "(byte offset " + std::to_string(good.size()) + ")");
  }
  // Invalid UTF-8 in a text file, likewise.
  WriteText(dir + "/bad.txt", "fine\n%\nfine too\n%\nnot \xc3 fine\n");
  PrepOptions text;
  text.inputs = {dir + "/bad.txt"};
  text.fortune_format = true;
  text.val_fraction = 0;
  text.out_dir = dir + "/text";
  EXPECT_CONTAINS(std::string(Prep(text).status().message()),
                  "bad.txt:5: byte offset 22: invalid UTF-8");
  text.skip_bad = true;
  absl::StatusOr<PrepStats> skipped_text = Prep(text);
  ASSERT_TRUE(skipped_text.ok()) << skipped_text.status();
  EXPECT_EQ(skipped_text->skipped, 1);
  EXPECT_EQ(skipped_text->documents, 2);

  // --skip-bad: every case counted by its reason; the good lines all kept.
  WriteText(dir + "/all.jsonl", all);
  PrepOptions options;
  options.inputs = {dir + "/all.jsonl"};
  options.out_dir = dir + "/skipped";
  options.skip_bad = true;
  absl::StatusOr<PrepStats> stats = Prep(options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->documents, 40);
  EXPECT_EQ(stats->skipped, 6);
  EXPECT_EQ(stats->skipped_by_reason, (std::map<std::string, int64_t>{{"malformed JSON", 2},
                                                                      {"not a JSON object", 1},
                                                                      {"no key", 1},
                                                                      {"expected a string", 2}}));
  EXPECT_CONTAINS(stats->first_skipped, "all.jsonl:41");
}

TEST(PrepTest, MissingInputsGlobsAndEmptyDirectoriesAreNamed) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  std::filesystem::create_directories(dir + "/empty");
  PrepOptions options;
  options.out_dir = dir + "/out";
  options.inputs = {dir + "/nothing*.jsonl"};
  EXPECT_CONTAINS(std::string(Prep(options).status().message()),
                  "no file matches '" + dir + "/nothing*.jsonl'");
  options.inputs = {dir + "/empty"};
  EXPECT_CONTAINS(std::string(Prep(options).status().message()),
                  "directory '" + dir + "/empty' holds no files");
  options.inputs = {dir + "/docs.jsonl"};
  options.format = "xml";
  EXPECT_CONTAINS(std::string(Prep(options).status().message()), "unknown input format 'xml'");
  // A truncated gzip or zstd file is an error naming it.
  WriteCorpusForms(dir);
  for (const char* name : {"/docs.jsonl.gz", "/docs.jsonl.zst"}) {
    std::string bytes = ReadBytes(dir + name);
    WriteText(dir + "/cut" + std::string(name).substr(5), bytes.substr(0, bytes.size() / 2));
    options.inputs = {dir + "/cut" + std::string(name).substr(5)};
    options.format = "auto";
    const absl::Status s = Prep(options).status();
    EXPECT_FALSE(s.ok()) << name;
    EXPECT_CONTAINS(std::string(s.message()), "cut.jsonl");
    EXPECT_CONTAINS(std::string(s.message()), "truncated");
  }
}

// ---------------------------------------------------------------------------------------------
// Sampler

// Two shards holding 0..599 and 600..999: every token value is its position in the stream.
std::vector<std::string> CountingShards(const std::string& dir) {
  std::vector<int32_t> a, b;
  for (int32_t i = 0; i < 600; ++i) a.push_back(i);
  for (int32_t i = 600; i < 1000; ++i) b.push_back(i);
  EXPECT_TRUE(WriteShard(dir + "/a.bin", a).ok());
  EXPECT_TRUE(WriteShard(dir + "/b.bin", b).ok());
  return {dir + "/a.bin", dir + "/b.bin"};
}

TEST(WindowSamplerTest, WindowsAreDeterministicAndIndependentOfSplitting) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  constexpr int64_t kSeqLen = 16, kRow = kSeqLen + 1;
  auto sampler = WindowSampler::Open(CountingShards(dir), kSeqLen, 1234);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  EXPECT_EQ(sampler->total_tokens(), 1000);
  EXPECT_EQ(sampler->seq_len(), kSeqLen);

  std::vector<int32_t> whole(8 * kRow), again(8 * kRow), halves(8 * kRow);
  sampler->Fill(5, 0, 8, whole.data());
  sampler->Fill(5, 0, 8, again.data());
  EXPECT_EQ(whole, again);
  // Two ranks each filling half of the global batch see the same samples.
  sampler->Fill(5, 0, 4, halves.data());
  sampler->Fill(5, 4, 4, halves.data() + 4 * kRow);
  EXPECT_EQ(whole, halves);
  // One sample alone is the same as inside a batch.
  std::vector<int32_t> one(kRow);
  sampler->Fill(5, 6, 1, one.data());
  EXPECT_TRUE(std::equal(one.begin(), one.end(), whole.begin() + 6 * kRow));
  // A reopened sampler with the same seed reproduces the batch; other steps and seeds differ.
  auto reopened = WindowSampler::Open(CountingShards(dir), kSeqLen, 1234);
  ASSERT_TRUE(reopened.ok());
  reopened->Fill(5, 0, 8, again.data());
  EXPECT_EQ(whole, again);
  reopened->Fill(6, 0, 8, again.data());
  EXPECT_NE(whole, again);
  auto other_seed = WindowSampler::Open(CountingShards(dir), kSeqLen, 99);
  ASSERT_TRUE(other_seed.ok());
  other_seed->Fill(5, 0, 8, again.data());
  EXPECT_NE(whole, again);
}

TEST(WindowSamplerTest, WindowsAreContiguousAndSpanTheStream) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  constexpr int64_t kSeqLen = 16, kRow = kSeqLen + 1, kSamples = 4000;
  auto sampler = WindowSampler::Open(CountingShards(dir), kSeqLen, 1);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  std::vector<int32_t> batch(kSamples * kRow);
  sampler->Fill(0, 0, kSamples, batch.data());
  int32_t min_start = 1 << 30, max_start = -1;
  bool crosses_shards = false;
  for (int64_t i = 0; i < kSamples; ++i) {
    const int32_t* row = batch.data() + i * kRow;
    for (int64_t j = 1; j < kRow; ++j) ASSERT_EQ(row[j], row[0] + j);  // one contiguous run
    min_start = std::min(min_start, row[0]);
    max_start = std::max(max_start, row[0]);
    crosses_shards |= row[0] < 600 && row[kSeqLen] >= 600;
  }
  EXPECT_GE(min_start, 0);
  EXPECT_LE(max_start, 1000 - kRow);  // the last window ends at the last token
  EXPECT_LT(min_start, 10);           // starts spread over the whole range
  EXPECT_GT(max_start, 1000 - kRow - 10);
  EXPECT_TRUE(crosses_shards);  // the shards form one stream
}

TEST(WindowSamplerTest, EvalWindowsCoverTheStreamInOrder) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  constexpr int64_t kSeqLen = 16, kRow = kSeqLen + 1;
  auto sampler = WindowSampler::Open(CountingShards(dir), kSeqLen, 1);
  ASSERT_TRUE(sampler.ok());
  ASSERT_EQ(sampler->num_eval_windows(), (1000 - 1) / kSeqLen);
  std::vector<int32_t> row(kRow);
  int32_t expected_next = 0;
  for (int64_t w = 0; w < sampler->num_eval_windows(); ++w) {
    sampler->FillEval(w, row.data());
    for (int64_t j = 0; j < kRow; ++j) ASSERT_EQ(row[j], w * kSeqLen + j);
    EXPECT_EQ(row[0], expected_next);  // each window's targets end where the next inputs start
    expected_next = row[kSeqLen];
  }
  // Exactly enough tokens: one window.
  const std::string tight = dir + "/tight.bin";
  ASSERT_TRUE(WriteShard(tight, std::vector<int32_t>(kRow, 3)).ok());
  auto one = WindowSampler::Open({tight}, kSeqLen, 0);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->num_eval_windows(), 1);
  one->Fill(0, 0, 1, row.data());
  EXPECT_EQ(row, std::vector<int32_t>(kRow, 3));
}

TEST(WindowSamplerTest, OpenErrorsNameTheShards) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  ASSERT_TRUE(WriteShard(dir + "/small.bin", std::vector<int32_t>(16, 1)).ok());
  auto too_small = WindowSampler::Open({dir + "/small.bin"}, 16, 0);
  ASSERT_FALSE(too_small.ok());
  EXPECT_CONTAINS(too_small.status().message(), dir + "/small.bin");
  EXPECT_CONTAINS(too_small.status().message(), "16 tokens");

  auto missing = WindowSampler::Open({dir + "/small.bin", dir + "/missing.bin"}, 4, 0);
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), dir + "/missing.bin");

  EXPECT_FALSE(WindowSampler::Open({dir + "/small.bin"}, 0, 0).ok());
}

// A shard made with another tokenizer holds ids the model has no row for: the error names the
// shard, the byte offset and the id, for both token widths (issue 15: it used to surface as
// "step 1: index out of range in self").
TEST(WindowSamplerTest, IdsOutsideTheVocabularyNameTheShardAndOffset) {
  const testing_util::TestDir tmp;
  std::vector<int32_t> tokens(40, 7);
  tokens[29] = 300;
  ASSERT_TRUE(WriteShard(tmp.path("narrow.bin"), tokens).ok());  // uint16 ids
  tokens[29] = 70000;
  ASSERT_TRUE(WriteShard(tmp.path("wide.bin"), tokens).ok());  // uint32 ids
  for (const auto& [name, id, offset] :
       {std::tuple{"narrow.bin", "300", "1082"}, std::tuple{"wide.bin", "70000", "1140"}}) {
    const std::string shard = tmp.path(name);
    ASSERT_TRUE(WindowSampler::Open({shard}, 8, 0).ok());  // no vocabulary given: any id
    auto bad = WindowSampler::Open({shard}, 8, 0, /*vocab_size=*/256);
    ASSERT_FALSE(bad.ok()) << name;
    EXPECT_CONTAINS(bad.status().message(), shard + ": byte offset " + offset);
    EXPECT_CONTAINS(bad.status().message(), std::string("token 29 has id ") + id +
                                                ", outside the model's vocabulary [0, 256)");
  }
  EXPECT_TRUE(WindowSampler::Open({tmp.path("wide.bin")}, 8, 0, 70001).ok());
}

}  // namespace

// Weighted mixtures (data/mixture.h).
TEST(MixtureSamplerTest, DrawsSourcesInProportionDeterministicallyAndOneSourceIsTheWindowSampler) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  // Source a holds ids 0..999, b 1000..1999, c (two shards, by a glob) 2000..2999.
  std::vector<int32_t> a, b, c1, c2;
  for (int32_t i = 0; i < 1000; ++i) a.push_back(i), b.push_back(1000 + i);
  for (int32_t i = 0; i < 500; ++i) c1.push_back(2000 + i), c2.push_back(2500 + i);
  ASSERT_TRUE(WriteShard(dir + "/a.bin", a).ok());
  ASSERT_TRUE(WriteShard(dir + "/b.bin", b).ok());
  std::filesystem::create_directories(dir + "/c");
  ASSERT_TRUE(WriteShard(dir + "/c/part-1.bin", c1).ok());
  ASSERT_TRUE(WriteShard(dir + "/c/part-2.bin", c2).ok());
  constexpr int64_t kSeq = 8, kRow = kSeq + 1;
  const std::vector<MixtureSource> sources = {
      {{dir + "/a.bin"}, 0.5}, {{dir + "/b.bin"}, 0.3}, {{dir + "/c/*.bin"}, 0.2}};
  MixtureSampler m = MixtureSampler::Open(sources, kSeq, 42).value();
  ASSERT_EQ(m.num_sources(), 3);
  EXPECT_EQ(m.files(2), (std::vector<std::string>{dir + "/c/part-1.bin", dir + "/c/part-2.bin"}));
  EXPECT_DOUBLE_EQ(m.weight(0) + m.weight(1) + m.weight(2), 1.0);
  // 2000 steps x 16 samples: realised shares within 1% of the weights; every window lies inside
  // the source its sample was given.
  std::vector<int64_t> counts(3, 0);
  std::vector<int32_t> out(16 * kRow);
  for (int64_t step = 0; step < 2000; ++step) {
    m.Fill(step, 0, 16, out.data());
    for (int64_t i = 0; i < 16; ++i) {
      const int source = m.SourceOf(step, i);
      ++counts[source];
      for (int64_t t = 0; t < kRow; ++t) {
        ASSERT_EQ(out[i * kRow + t] / 1000, source) << step << " " << i;
      }
    }
  }
  EXPECT_NEAR(counts[0] / 32000.0, 0.5, 0.01);
  EXPECT_NEAR(counts[1] / 32000.0, 0.3, 0.01);
  EXPECT_NEAR(counts[2] / 32000.0, 0.2, 0.01);
  // Deterministic, and a sample's window does not depend on how the batch is split (ranks).
  std::vector<int32_t> whole(16 * kRow), parts(16 * kRow);
  MixtureSampler again = MixtureSampler::Open(sources, kSeq, 42).value();
  m.Fill(7, 0, 16, whole.data());
  again.Fill(7, 0, 5, parts.data());
  again.Fill(7, 5, 11, parts.data() + 5 * kRow);
  EXPECT_EQ(whole, parts);
  // Another seed draws other sources.
  MixtureSampler other = MixtureSampler::Open(sources, kSeq, 43).value();
  int differ = 0;
  for (int64_t i = 0; i < 64; ++i) differ += other.SourceOf(3, i) != m.SourceOf(3, i);
  EXPECT_GT(differ, 10);
  // One source: exactly the WindowSampler over the same shards (runs of older recipes are kept).
  MixtureSampler single =
      MixtureSampler::Open({{{dir + "/a.bin", dir + "/b.bin"}, 1.0}}, kSeq, 5).value();
  WindowSampler plain = WindowSampler::Open({dir + "/a.bin", dir + "/b.bin"}, kSeq, 5).value();
  std::vector<int32_t> x(4 * kRow), y(4 * kRow);
  for (int64_t step = 0; step < 20; ++step) {
    single.Fill(step, 3, 4, x.data());
    plain.Fill(step, 3, 4, y.data());
    EXPECT_EQ(x, y) << step;
  }
  // Bad weights and globs matching nothing are named.
  EXPECT_CONTAINS(
      std::string(MixtureSampler::Open({{{dir + "/a.bin"}, 0.0}}, kSeq, 1).status().message()),
      "weights must be > 0");
  EXPECT_CONTAINS(
      std::string(MixtureSampler::Open({{{dir + "/none-*.bin"}, 1.0}}, kSeq, 1).status().message()),
      "no shard matches '" + dir + "/none-*.bin'");
}

}  // namespace qat::data
