// The qat_spm module (see sentencepiece_bridge.h): no Abseil header may be included here.
#include "data/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>

namespace qat::data::spm {
namespace {

std::string Message(const sentencepiece::util::Status& s) { return s.ok() ? "" : s.ToString(); }

class ProcessorImpl : public Processor {
 public:
  std::string Load(std::string_view model) override {
    return Message(sp_.LoadFromSerializedProto(model));
  }
  std::string Encode(std::string_view text, std::vector<int>* ids) const override {
    return Message(sp_.Encode(text, ids));
  }
  std::string EncodePieces(std::string_view text, std::vector<std::string>* pieces) const override {
    return Message(sp_.Encode(text, pieces));
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    return Message(sp_.Decode(ids, text));
  }
  int piece_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int unk_id() const override { return sp_.unk_id(); }
  std::string piece(int id) const override { return sp_.IdToPiece(id); }
  float score(int id) const override { return sp_.GetScore(id); }
  bool is_unknown(int id) const override { return sp_.IsUnknown(id); }
  bool is_control(int id) const override { return sp_.IsControl(id); }
  bool is_unused(int id) const override { return sp_.IsUnused(id); }
  bool is_byte(int id) const override { return sp_.IsByte(id); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) Processor* qat_spm_create() {
  return new ProcessorImpl();
}

}  // namespace qat::data::spm
