// SentencePiece tokenizer.model files through Debian's libsentencepiece (optional at build time:
// without it, loading one is an error that says how to get it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokens.h"

namespace qat::data {

// Whether this build links libsentencepiece.
bool SentencePieceAvailable();

// `model`: the bytes of a tokenizer.model (a serialized sentencepiece.ModelProto); `origin` names
// it in errors; `files`: the files to copy on HF export.
//
// BOS/EOS/UNK ids are the model's own (trainer_spec bos_id/eos_id/unk_id; -1 when disabled).
// Encode rejects invalid UTF-8 (the library would silently replace it) and otherwise does what
// the library does (normalization, dummy prefix, byte fallback). Decode is the library's: control
// tokens such as BOS/EOS decode to nothing. ToGguf describes the model as llama.cpp's "llama"
// vocabulary: every piece with its score and type (user-defined pieces come out NORMAL: the
// library does not expose that type); add_space_prefix tells whether the model adds
// the dummy prefix (found by encoding "a": the first piece then starts with U+2581).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePiece(std::string model,
                                                             const std::string& origin,
                                                             std::vector<std::string> files = {});

}  // namespace qat::data
