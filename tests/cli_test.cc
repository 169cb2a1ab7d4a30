// The qat binary on bad input: a clear message naming the key/file/offset, a non-zero exit code,
// and no crash (the process exits normally rather than by a signal).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/tokens.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "test_dir.h"

namespace {

struct QatRun {
  int exit_code = -1;
  bool signaled = false;
  std::string output;
};

QatRun Qat(const std::string& args) {
  const std::string cmd = std::string(QAT_BINARY_DIR) + "/trainer/qat " + args + " 2>&1";
  QatRun r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.signaled = WIFSIGNALED(status);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

// The running test's own directory, removed when the test ends.
std::string Dir() { return qat::testing_util::CurrentTestDir().dir(); }

std::string Write(const std::string& name, const std::string& text) {
  std::ofstream(Dir() + "/" + name, std::ios::binary) << text;
  return Dir() + "/" + name;
}

void ExpectError(const QatRun& r, std::vector<std::string> needles) {
  EXPECT_FALSE(r.signaled) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  for (const std::string& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << r.output << " lacks " << n;
}

// A valid tiny packed model: 1 layer, hidden 8, 2 heads, every linear ternary.
std::string TinyPackedModel() {
  using namespace qat::kernels;
  SafetensorsWriter w;
  const int64_t V = 258, D = 8, F = 16;
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"format", "qat-packed"}, {"qat.version", "1"}, {"qat.vocab_size", "258"},
           {"qat.hidden_size", "8"}, {"qat.intermediate_size", "16"}, {"qat.num_layers", "1"},
           {"qat.num_heads", "2"}, {"qat.num_kv_heads", "1"}, {"qat.max_seq_len", "64"},
           {"qat.rope_theta", "10000"}, {"qat.rms_norm_eps", "1e-5"}, {"qat.tie_embeddings", "1"},
           {"qat.bos_id", "256"}, {"qat.eos_id", "257"}, {"qat.tokenizer", "byte"}}) {
    w.SetMetadata(k, v);
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  auto dense = [&](const std::string& name, std::vector<int64_t> shape, bool ones) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    for (float& x : v) x = ones ? 1.0f : normal(rng);
    w.Add(name, DType::kF32, shape, v.data(), v.size() * 4);
  };
  auto packed = [&](const std::string& name, int64_t out, int64_t in) {
    std::vector<int8_t> trits(out * in);
    for (auto& t : trits) t = int8_t(int(rng() % 3) - 1);
    std::vector<uint8_t> bytes(out * TernaryRowBytes(in));
    PackTernary(trits.data(), out, in, bytes.data());
    w.Add(name, DType::kU8, {out, TernaryRowBytes(in)}, bytes.data(), bytes.size());
    float scale = 0.1f;
    w.Add(name + ".scale", DType::kF32, {1}, &scale, 4);
    w.SetMetadata("qat.quant." + name, "ternary2");
  };
  dense("model.embed_tokens.weight", {V, D}, false);
  dense("model.norm.weight", {D}, true);
  dense("model.layers.0.input_layernorm.weight", {D}, true);
  dense("model.layers.0.post_attention_layernorm.weight", {D}, true);
  packed("model.layers.0.self_attn.q_proj.weight", D, D);
  packed("model.layers.0.self_attn.k_proj.weight", D / 2, D);
  packed("model.layers.0.self_attn.v_proj.weight", D / 2, D);
  packed("model.layers.0.self_attn.o_proj.weight", D, D);
  packed("model.layers.0.mlp.gate_proj.weight", F, D);
  packed("model.layers.0.mlp.up_proj.weight", F, D);
  packed("model.layers.0.mlp.down_proj.weight", D, F);
  return w.Serialize();
}

TEST(Cli, UnknownCommandAndFlag) {
  ExpectError(Qat("frobnicate"), {"unknown command 'frobnicate'"});
  QatRun r = Qat("eval --modle x");
  ExpectError(r, {"unknown flag --modle"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectError(Qat("eval --model"), {"--model needs a value"});
}

TEST(Cli, BadRecipes) {
  ExpectError(Qat("train " + Write("unknown.yaml", "train:\n  stpes: 3\n")),
              {"unknown.yaml:2", "unknown key 'train.stpes'", "did you mean 'train.steps'"});
  ExpectError(Qat("train " + Write("type.yaml", "model:\n  num_layers: two\n")),
              {"type.yaml:2", "'model.num_layers' must be an integer"});
  ExpectError(Qat("train " + Dir() + "/absent.yaml"), {"absent.yaml", "cannot open"});
  ExpectError(Qat("train " + Write("nodata.yaml", "data:\n  train: [" + Dir() + "/none.bin]\n")),
              {"none.bin"});
  ExpectError(Qat("recipe check " + Write("over.yaml", "") + " --set train.lr=abc"),
              {"--set train.lr=abc", "'train.lr' must be a number"});
}

TEST(Cli, TruncatedTokenShard) {
  std::vector<int32_t> tokens(5000, 65);
  ASSERT_TRUE(qat::data::WriteShard(Dir() + "/good.bin", tokens).ok());
  std::string bytes;
  {
    std::ifstream in(Dir() + "/good.bin", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string truncated = Write("truncated.bin", bytes.substr(0, bytes.size() - 7));
  const std::string model = Write("tiny.safetensors", TinyPackedModel());
  QatRun ok = Qat("eval --model " + model + " --data " + Dir() + "/good.bin --windows 2 --max-new-tokens 4");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  ExpectError(Qat("eval --model " + model + " --data " + truncated + " --windows 2"),
              {"truncated.bin"});
  ExpectError(Qat("eval --model " + model + " --data " + Write("header.bin", bytes.substr(0, 100))),
              {"header.bin"});
}

TEST(Cli, TruncatedOrCorruptedExport) {
  const std::string bytes = TinyPackedModel();
  for (size_t cut : {size_t(3), size_t(40), bytes.size() / 2, bytes.size() - 1}) {
    ExpectError(Qat("eval --max-new-tokens 2 --model " + Write("cut.safetensors", bytes.substr(0, cut))),
                {"cut.safetensors"});
  }
  // A header length far beyond the file.
  std::string huge = bytes;
  huge[6] = '\x7f';
  ExpectError(Qat("eval --max-new-tokens 2 --model " + Write("huge.safetensors", huge)),
              {"huge.safetensors"});
  // Every byte of the first packed tensor set to 0xff: codes of 3 are not ternary.
  qat::kernels::SafetensorsFile f =
      qat::kernels::SafetensorsFile::Parse(bytes, "mem").value();
  const qat::kernels::TensorInfo* t = f.Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(t, nullptr);
  std::string bad = bytes;
  const size_t header = 8 + size_t(static_cast<unsigned char>(bytes[0])) +
                        (size_t(static_cast<unsigned char>(bytes[1])) << 8);
  for (int64_t i = t->begin; i < t->end; ++i) bad[header + i] = '\xff';
  ExpectError(Qat("eval --max-new-tokens 2 --model " + Write("bad.safetensors", bad)),
              {"bad.safetensors", "model.layers.0.self_attn.q_proj.weight"});
}

}  // namespace
