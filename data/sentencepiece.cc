// The SentencePiece tokenizer on libsentencepiece (see sentencepiece.h).
#include "data/sentencepiece.h"

#include <dlfcn.h>

#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "data/sentencepiece_bridge.h"
#include "data/unicode.h"

namespace qat::data {
namespace {

constexpr int32_t kGgufNormal = 1, kGgufUnknown = 2, kGgufControl = 3, kGgufUnused = 5,
                  kGgufByte = 6;

// Opens the qat_spm module once per process (see sentencepiece_bridge.h); nullptr + *error when
// it cannot be loaded.
spm::CreateFn ModuleFactory(std::string* error) {
  static std::once_flag once;
  static spm::CreateFn create = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    void* handle = dlopen(QAT_SPM_MODULE, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      const char* e = dlerror();
      load_error = absl::StrCat("cannot load ", QAT_SPM_MODULE, ": ", e ? e : "unknown error");
      return;
    }
    create = reinterpret_cast<spm::CreateFn>(dlsym(handle, "qat_spm_create"));
    if (create == nullptr) load_error = absl::StrCat(QAT_SPM_MODULE, " lacks qat_spm_create");
  });
  *error = load_error;
  return create;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string model, std::vector<std::string> files)
      : model_(std::move(model)), files_(std::move(files)) {}

  absl::Status Init(const std::string& origin) {
    std::string module_error;
    spm::CreateFn create = ModuleFactory(&module_error);
    if (create == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(origin, ": ", module_error));
    }
    processor_.reset(create());
    if (std::string error = sp_ref().Load(model_); !error.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": not a valid SentencePiece model: ", error));
    }
    if (sp_ref().piece_size() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": SentencePiece model has no pieces"));
    }
    return absl::OkStatus();
  }

  std::string kind() const override { return "sentencepiece"; }
  int64_t vocab_size() const override { return sp_ref().piece_size(); }
  int32_t bos_id() const override { return sp_ref().bos_id(); }
  int32_t eos_id() const override { return sp_ref().eos_id(); }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    if (size_t bad = unicode::FindInvalidUtf8(text); bad != std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SentencePiece tokenizer: text is not valid UTF-8 at byte offset ", bad, " (byte 0x",
          absl::Hex(static_cast<unsigned char>(text[bad]), absl::kZeroPad2), ")"));
    }
    std::vector<int> ids;
    if (std::string error = sp_ref().Encode(text, &ids); !error.empty()) {
      return absl::InternalError(absl::StrCat("SentencePiece: ", error));
    }
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in(ids.begin(), ids.end());
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] < 0 || in[i] >= sp_ref().piece_size()) {
        return absl::InvalidArgumentError(absl::StrCat("SentencePiece tokenizer: id ", in[i],
                                                       " (position ", i, ") is not a token"));
      }
    }
    std::string text;
    if (std::string error = sp_ref().Decode(in, &text); !error.empty()) {
      return absl::InternalError(absl::StrCat("SentencePiece: ", error));
    }
    return text;
  }

  std::optional<kernels::GgufTokenizer> ToGguf() const override {
    kernels::GgufTokenizer g;
    g.model = "llama";
    for (int id = 0; id < sp_ref().piece_size(); ++id) {
      g.tokens.push_back(sp_ref().piece(id));
      g.scores.push_back(sp_ref().score(id));
      g.token_types.push_back(sp_ref().is_unknown(id)   ? kGgufUnknown
                              : sp_ref().is_control(id) ? kGgufControl
                              : sp_ref().is_unused(id)  ? kGgufUnused
                              : sp_ref().is_byte(id)    ? kGgufByte
                                                        : kGgufNormal);
    }
    g.bos = sp_ref().bos_id();
    g.eos = sp_ref().eos_id();
    g.unk = sp_ref().unk_id();
    g.add_bos = g.bos >= 0;
    std::vector<std::string> pieces;
    if (sp_ref().EncodePieces("a", &pieces).empty() && !pieces.empty()) {
      g.add_space_prefix = pieces[0].rfind("\xE2\x96\x81", 0) == 0;
    }
    return g;
  }

  std::vector<std::string> files() const override { return files_; }

  std::map<std::string, std::string> Metadata() const override {
    return {{"qat.tokenizer", "sentencepiece"},
            {"qat.tokenizer.model", absl::Base64Escape(model_)},
            {"qat.bos_id", absl::StrCat(bos_id())},
            {"qat.eos_id", absl::StrCat(eos_id())}};
  }

 private:
  std::string model_;
  std::vector<std::string> files_;
  std::unique_ptr<spm::Processor> processor_;
  // The processor, once Init has made it.
  spm::Processor& sp_ref() const { return *processor_; }
};

}  // namespace

bool SentencePieceAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(std::string model,
                                                             const std::string& origin,
                                                             std::vector<std::string> files) {
  auto t = std::make_unique<SentencePieceTokenizer>(std::move(model), std::move(files));
  if (absl::Status s = t->Init(origin); !s.ok()) return s;
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace qat::data
