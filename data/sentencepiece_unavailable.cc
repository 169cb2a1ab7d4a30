// Builds without libsentencepiece: SentencePiece models cannot be loaded (see sentencepiece.h).
#include "absl/strings/str_cat.h"
#include "data/sentencepiece.h"

namespace qat::data {

bool SentencePieceAvailable() { return false; }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(std::string, const std::string& origin,
                                                             std::vector<std::string>) {
  return absl::FailedPreconditionError(absl::StrCat(
      origin,
      ": this qat was built without libsentencepiece, so SentencePiece tokenizer.model "
      "files cannot be read; install it (apt-get install libsentencepiece-dev, or run "
      "launch/setup.sh) and rebuild"));
}

}  // namespace qat::data
