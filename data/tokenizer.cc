// The tokenizers behind data::Tokenizer: the byte tokenizer (one id per byte, plus BOS/EOS ids
// above the byte range), and loading a tokenizer by path or from packed-export metadata.
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "data/bpe.h"
#include "data/sentencepiece.h"
#include "data/tokens.h"
#include "kernels/safetensors.h"

namespace qat::data {

std::vector<int32_t> ByteTokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    // BOS, EOS and anything outside the vocabulary carry no bytes.
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// The Tokenizer interface: the byte tokenizer, and loading by path or from export metadata.

namespace {

namespace fs = std::filesystem;

class ByteTokenizerAdapter : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return ByteTokenizer::kVocabSize; }
  int32_t bos_id() const override { return ByteTokenizer::kBos; }
  int32_t eos_id() const override { return ByteTokenizer::kEos; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    return tok_.Encode(std::string(text));
  }
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override {
    return tok_.Decode(ids);
  }
  std::optional<kernels::GgufTokenizer> ToGguf() const override { return std::nullopt; }
  std::vector<std::string> files() const override { return {}; }
  std::map<std::string, std::string> Metadata() const override {
    return {{"qat.tokenizer", "byte"},
            {"qat.bos_id", absl::StrCat(ByteTokenizer::kBos)},
            {"qat.eos_id", absl::StrCat(ByteTokenizer::kEos)}};
  }

 private:
  ByteTokenizer tok_;
};

// The files beside a tokenizer file that a Hugging Face directory carries with it.
std::vector<std::string> CompanionFiles(const fs::path& file) {
  std::vector<std::string> files = {file.string()};
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    std::error_code ec;
    const fs::path p = file.parent_path() / name;
    if (fs::is_regular_file(p, ec)) files.push_back(p.string());
  }
  return files;
}

}  // namespace

std::unique_ptr<Tokenizer> MakeByteTokenizer() { return std::make_unique<ByteTokenizerAdapter>(); }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (path.empty() || path == "byte") return MakeByteTokenizer();
  std::error_code ec;
  fs::path file = path;
  if (fs::is_directory(file, ec)) {
    if (fs::is_regular_file(file / "tokenizer.json", ec)) {
      file /= "tokenizer.json";
    } else if (fs::is_regular_file(file / "tokenizer.model", ec)) {
      file /= "tokenizer.model";
    } else {
      return absl::NotFoundError(
          absl::StrCat(path, ": directory holds neither tokenizer.json nor tokenizer.model"));
    }
  }
  absl::StatusOr<std::string> bytes = kernels::ReadFile(file.string());
  if (!bytes.ok()) return bytes.status();
  if (absl::EndsWith(file.string(), ".json")) {
    std::string config;
    const fs::path config_path = file.parent_path() / "tokenizer_config.json";
    if (fs::is_regular_file(config_path, ec)) {
      absl::StatusOr<std::string> c = kernels::ReadFile(config_path.string());
      if (!c.ok()) return c.status();
      config = *std::move(c);
    }
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> bpe =
        BpeTokenizer::Create(*std::move(bytes), std::move(config), file.string(),
                             CompanionFiles(file));
    if (!bpe.ok()) return bpe.status();
    return std::unique_ptr<Tokenizer>(*std::move(bpe));
  }
  return LoadSentencePiece(*std::move(bytes), file.string(), CompanionFiles(file));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromMetadata(
    const std::map<std::string, std::string>& metadata, const std::string& origin) {
  const auto get = [&](const char* key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  const std::string kind = get("qat.tokenizer");
  if (kind == "byte") return MakeByteTokenizer();
  if (kind == "bpe") {
    if (metadata.count("qat.tokenizer.json") == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": qat.tokenizer is \"bpe\" but qat.tokenizer.json is missing"));
    }
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> bpe = BpeTokenizer::Create(
        get("qat.tokenizer.json"), get("qat.tokenizer.config"), origin + " (qat.tokenizer.json)");
    if (!bpe.ok()) return bpe.status();
    return std::unique_ptr<Tokenizer>(*std::move(bpe));
  }
  if (kind == "sentencepiece") {
    std::string model;
    if (!absl::Base64Unescape(get("qat.tokenizer.model"), &model) || model.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": qat.tokenizer.model is missing or not base64 of a SentencePiece model"));
    }
    return LoadSentencePiece(std::move(model), origin + " (qat.tokenizer.model)");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      origin, ": qat.tokenizer = \"", kind, "\", expected byte, bpe or sentencepiece"));
}

}  // namespace qat::data
