// `qat prep`: text files -> documents -> BOS + tokens + EOS streams in train.bin / val.bin, with the
// byte tokenizer or a model's own (tokenizer.json / tokenizer.model, see tokens.h).
//
// Which split a document goes to depends only on (seed, its index among the kept documents), so
// the same inputs and seed always give the same files.
#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/tokens.h"
#include "kernels/safetensors.h"

namespace qat::data {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A uniform draw in [0, 1) for document `index` under `seed`.
double DocumentDraw(uint64_t seed, uint64_t index) {
  const uint64_t h = SplitMix64(SplitMix64(seed) ^ index);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

// Documents with only whitespace carry no text worth training on.
bool IsBlank(const std::string& text) {
  return text.find_first_not_of(" \t\r\n\v\f") == std::string::npos;
}

// Fortune format: a line holding only "%" (optionally followed by '\r') ends a document; every
// other line, with its newline, belongs to the current document.
void SplitFortunes(const std::string& text, std::vector<std::string>* docs) {
  std::string current;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    std::string_view line(text.data() + pos, end - pos);
    std::string_view content = line;
    if (!content.empty() && content.back() == '\n') content.remove_suffix(1);
    if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
    if (content == "%") {
      docs->push_back(std::move(current));
      current.clear();
    } else {
      current.append(line);
    }
    pos = end;
  }
  docs->push_back(std::move(current));
}

// BOS (when the tokenizer has one distinct from EOS: GPT-2 style tokenizers use one token for
// both, and one separator between documents is enough) + tokens + EOS (when there is one).
absl::Status AppendDocument(const Tokenizer& tokenizer, const std::string& doc, size_t index,
                            std::vector<int32_t>* tokens) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(doc);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(), absl::StrCat("prep: document ", index, " (0-based, ",
                                                          "after splitting): ", ids.status().message()));
  }
  if (tokenizer.bos_id() >= 0 && tokenizer.bos_id() != tokenizer.eos_id()) {
    tokens->push_back(tokenizer.bos_id());
  }
  tokens->insert(tokens->end(), ids->begin(), ids->end());
  if (tokenizer.eos_id() >= 0) tokens->push_back(tokenizer.eos_id());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrepStats> Prep(const PrepOptions& options) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("prep: no input files given");
  if (options.out_dir.empty()) return absl::InvalidArgumentError("prep: no output directory given");
  if (!(options.val_fraction >= 0.0 && options.val_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: val_fraction ", options.val_fraction, " is outside [0, 1]"));
  }

  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(options.tokenizer);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat("prep: tokenizer: ", tokenizer.status().message()));
  }

  std::vector<std::string> docs;
  for (const std::string& input : options.inputs) {
    absl::StatusOr<std::string> text = kernels::ReadFile(input);
    if (!text.ok()) {
      return absl::Status(text.status().code(),
                          absl::StrCat("prep: cannot read input file: ", text.status().message()));
    }
    std::vector<std::string> file_docs;
    if (options.fortune_format) {
      SplitFortunes(*text, &file_docs);
    } else {
      file_docs.push_back(*std::move(text));
    }
    for (std::string& doc : file_docs) {
      if (!IsBlank(doc)) docs.push_back(std::move(doc));
    }
  }
  if (docs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: no non-empty documents in ", absl::StrJoin(options.inputs, ", ")));
  }

  std::vector<double> draws(docs.size());
  std::vector<bool> is_val(docs.size());
  size_t val_count = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    draws[i] = DocumentDraw(options.seed, i);
    is_val[i] = draws[i] < options.val_fraction;
    val_count += is_val[i];
  }
  // With two or more documents both splits get at least one: the lowest draw is the one most
  // eligible for validation, the highest the one most eligible for training. A lone document
  // goes to training, which cannot do without one.
  if (docs.size() == 1) {
    is_val[0] = false;
  } else if (val_count == 0) {
    is_val[std::min_element(draws.begin(), draws.end()) - draws.begin()] = true;
  } else if (val_count == docs.size()) {
    is_val[std::max_element(draws.begin(), draws.end()) - draws.begin()] = false;
  }

  PrepStats stats;
  std::vector<int32_t> train, val;
  for (size_t i = 0; i < docs.size(); ++i) {
    absl::Status s = AppendDocument(**tokenizer, docs[i], i, is_val[i] ? &val : &train);
    if (!s.ok()) return s;
    ++(is_val[i] ? stats.val_documents : stats.train_documents);
  }
  if (docs.size() == 1) {
    stats.warning = absl::StrCat(
        "val.bin is empty: the input holds one document (", absl::StrJoin(options.inputs, ", "),
        "), which goes to train.bin; a run with data.val set to it will fail. Give several files, "
        "or --fortune for files of documents separated by lines holding only \"%\"");
  }
  stats.tokenizer_kind = (*tokenizer)->kind();
  stats.vocab_size = (*tokenizer)->vocab_size();
  stats.documents = static_cast<int64_t>(docs.size());
  stats.train_tokens = static_cast<int64_t>(train.size());
  stats.val_tokens = static_cast<int64_t>(val.size());

  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("prep: cannot create directory ", options.out_dir, ": ", ec.message()));
  }
  const std::string dir = options.out_dir + "/";
  if (absl::Status s = WriteShard(dir + "train.bin", train, stats.vocab_size); !s.ok()) return s;
  if (absl::Status s = WriteShard(dir + "val.bin", val, stats.vocab_size); !s.ok()) return s;
  return stats;
}

}  // namespace qat::data
