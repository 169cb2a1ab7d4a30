// Tests of the byte tokenizer, token shards, `prep` and the window sampler.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

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
    ASSERT_TRUE(Prep(options).ok());
    options.out_dir = dir + "/second";
    ASSERT_TRUE(Prep(options).ok());
    const std::string val = ReadBytes(dir + "/first/val.bin");
    EXPECT_EQ(val, ReadBytes(dir + "/second/val.bin")) << seed;
    EXPECT_EQ(ReadBytes(dir + "/first/train.bin"), ReadBytes(dir + "/second/train.bin")) << seed;
    distinct_val_files.insert(val);
  }
  EXPECT_GT(distinct_val_files.size(), 1u);  // the seed picks the documents
}

TEST(PrepTest, GuaranteesBothSplitsAndHandlesPlainFiles) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  WriteText(dir + "/x.txt", "first file\n%\nstill first\n");
  WriteText(dir + "/y.txt", "second file");
  WriteText(dir + "/blank.txt", " \n\n");
  PrepOptions options;
  options.inputs = {dir + "/x.txt", dir + "/blank.txt", dir + "/y.txt"};
  options.out_dir = dir + "/out";
  options.fortune_format = false;  // whole files are documents; "%" is just text
  for (double fraction : {0.0, 1.0}) {
    options.val_fraction = fraction;
    auto stats = Prep(options);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->documents, 2);
    EXPECT_EQ(stats->train_documents, 1) << fraction;
    EXPECT_EQ(stats->val_documents, 1) << fraction;
  }
  std::vector<std::string> both = DocumentsIn(dir + "/out/train.bin");
  for (const auto& d : DocumentsIn(dir + "/out/val.bin")) both.push_back(d);
  std::sort(both.begin(), both.end());
  EXPECT_EQ(both, (std::vector<std::string>{"first file\n%\nstill first\n", "second file"}));

  // A single document can only go to train.
  options.inputs = {dir + "/y.txt"};
  options.val_fraction = 1.0;
  auto single = Prep(options);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->train_documents, 1);
  EXPECT_EQ(single->val_documents, 0);
  EXPECT_EQ(single->val_tokens, 0);
  EXPECT_CONTAINS(single->warning, "val.bin is empty: the input holds one document");
  EXPECT_CONTAINS(single->warning, dir + "/y.txt");
  options.inputs = {dir + "/x.txt", dir + "/y.txt"};
  EXPECT_EQ(Prep(options).value().warning, "");  // two documents: both splits get one
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
}  // namespace qat::data
