// libsentencepiece behind a wall, loaded at run time.
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite with exported symbols,
// and libtorch loads the full libprotobuf. In one process the first-loaded copy interposes the
// other's symbols and libprotobuf's static initialisation crashes. So the library is never linked
// into qat: a small module (qat_spm, sentencepiece_bridge.cc, the only file that includes
// <sentencepiece_processor.h>) links it, and LoadSentencePieceModule() dlopens that module with
// RTLD_LOCAL | RTLD_DEEPBIND, so that it and libsentencepiece resolve symbols in their own scope
// first and add nothing to the global one. The module hands out objects of the abstract class
// below (calls go through the vtable; no other symbol crosses). Its header also declares
// absl::string_view as std::string_view, which clashes with Debian's Abseil: another reason to
// keep it in a file of its own that includes no Abseil header.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qat::data::spm {

class Processor {
 public:
  virtual ~Processor() = default;
  // Each returns "" on success, else the library's error message.
  virtual std::string Load(std::string_view serialized_model) = 0;
  virtual std::string Encode(std::string_view text, std::vector<int>* ids) const = 0;
  virtual std::string EncodePieces(std::string_view text,
                                   std::vector<std::string>* pieces) const = 0;
  virtual std::string Decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int piece_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int unk_id() const = 0;
  virtual std::string piece(int id) const = 0;
  virtual float score(int id) const = 0;
  virtual bool is_unknown(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual bool is_unused(int id) const = 0;
  virtual bool is_byte(int id) const = 0;
};

// The module's one exported symbol: a new Processor (owned by the caller).
extern "C" Processor* qat_spm_create();
using CreateFn = Processor* (*)();

}  // namespace qat::data::spm
