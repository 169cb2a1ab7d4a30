#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
constexpr char kManifest[] = "manifest.yaml";
constexpr char kFormat[] = "qat-checkpoint-2";
// The manifest's last line, "manifest_checksum: HEX", seals it: Checksum64 of every byte before
// that line. Without it an edited step (20 -> 90) passed as valid, and resume took the run for
// finished. Manifests of qat before the seal have no such line; they load, and `qat ckpt inspect`
// says they are unsealed. Every manifest's step must also match its directory's name (step-N).
constexpr char kManifestSeal[] = "manifest_checksum: ";

absl::Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot open for fsync"));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat(path, ": fsync failed"));
  return absl::OkStatus();
}

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

}  // namespace

void FaultPoint(const std::string& where, int64_t step, int rank) {
  const char* spec = std::getenv("QAT_FAULT_KILL");
  const char* once = std::getenv("QAT_FAULT_ONCE");
  if (spec == nullptr || once == nullptr) return;
  if (std::string(spec) != absl::StrCat(where, ":", step, ":", rank)) return;
  std::error_code ec;
  if (fs::exists(once, ec)) return;
  std::ofstream(once) << spec << "\n";
  std::fprintf(stderr, "qat: fault injection: rank %d kills itself at %s %lld\n", rank,
               where.c_str(), (long long)step);
  std::fflush(stderr);
  ::raise(SIGKILL);
}

// 8 bytes at a time: xor, multiply by a large odd constant, rotate; the bytes after the last
// whole word one at a time (FNV-style); then a final avalanche.
Checksum64Stream::Checksum64Stream(uint64_t total_size) : h_(0x9E3779B97F4A7C15ull ^ total_size) {}

void Checksum64Stream::Update(const void* data, size_t size) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  const auto word = [this](const unsigned char* bytes) {
    uint64_t w;
    std::memcpy(&w, bytes, 8);
    h_ = (h_ ^ w) * 0xFF51AFD7ED558CCDull;
    h_ = (h_ << 31) | (h_ >> 33);
  };
  if (pending_size_ > 0) {  // complete the word begun by an earlier piece
    const size_t take = std::min(size, sizeof pending_ - pending_size_);
    std::memcpy(pending_ + pending_size_, p, take);
    pending_size_ += take;
    p += take;
    size -= take;
    if (pending_size_ < sizeof pending_) return;
    word(pending_);
    pending_size_ = 0;
  }
  for (; size >= 8; p += 8, size -= 8) word(p);
  std::memcpy(pending_ + pending_size_, p, size);
  pending_size_ += size;
}

uint64_t Checksum64Stream::Finish() const {
  uint64_t h = h_;
  for (size_t i = 0; i < pending_size_; ++i) h = (h ^ pending_[i]) * 0x100000001B3ull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 33;
  return h;
}

uint64_t Checksum64(const void* data, size_t size) {
  Checksum64Stream sum(size);
  sum.Update(data, size);
  return sum.Finish();
}

absl::Status SaveTensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata) {
  kernels::SafetensorsWriter writer;
  std::vector<torch::Tensor> kept;
  for (const auto& [k, v] : metadata) writer.SetMetadata(k, v);
  for (const auto& [name, t] : tensors) {
    // Views of the tensors (a copy only where one is not fp32, contiguous and on the CPU), kept
    // alive until the file is written.
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    writer.AddView(name, kernels::DType::kF32, c.sizes().vec(), c.data_ptr<float>(),
                   c.numel() * sizeof(float));
    kept.push_back(std::move(c));
  }
  return writer.Write(path);
}

absl::StatusOr<TensorMap> LoadTensors(const std::string& path) {
  absl::StatusOr<kernels::SafetensorsFile> file = kernels::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  TensorMap out;
  for (const kernels::TensorInfo& info : file->tensors()) {
    absl::StatusOr<std::vector<float>> values = file->ReadF32(info.name);
    if (!values.ok()) return values.status();
    out[info.name] = torch::from_blob(values->data(), info.shape, torch::kFloat32).clone();
  }
  return out;
}

TensorMap ParameterMap(torch::nn::Module& module) {
  TensorMap out;
  for (const auto& item : module.named_parameters()) out[item.key()] = item.value();
  return out;
}

absl::Status LoadParameters(torch::nn::Module& module, const TensorMap& tensors,
                            const std::string& origin) {
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters()) {
    auto it = tensors.find(item.key());
    if (it == tensors.end()) {
      return absl::NotFoundError(absl::StrCat(origin, ": missing tensor '", item.key(), "'"));
    }
    if (!it->second.sizes().equals(item.value().sizes())) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": tensor '", item.key(), "' has shape ", c10::str(it->second.sizes()),
          ", the model expects ", c10::str(item.value().sizes())));
    }
    item.value().copy_(it->second);
  }
  return absl::OkStatus();
}

namespace {

std::string ShardFileName(const char* kind, int64_t rank, int64_t world) {
  return absl::StrFormat("%s-%05d-of-%05d.safetensors", kind, rank, world);
}

// Where a slice lies in its whole tensor, from a shard file's metadata ("qat.shape.NAME",
// "qat.begin.NAME"), checked against the slice's element count.
struct SliceMeta {
  std::vector<int64_t> shape;  // of the whole tensor
  int64_t begin = 0;
};

absl::StatusOr<SliceMeta> ReadSliceMeta(const std::map<std::string, std::string>& meta,
                                        const std::string& name, int64_t count,
                                        const std::string& path) {
  auto shape_it = meta.find("qat.shape." + name);
  auto begin_it = meta.find("qat.begin." + name);
  if (shape_it == meta.end() || begin_it == meta.end()) {
    return absl::DataLossError(
        absl::StrCat(path, ": tensor '", name, "' is not a 1-D slice with qat.shape/qat.begin"));
  }
  SliceMeta m;
  try {
    for (absl::string_view d : absl::StrSplit(shape_it->second, ',', absl::SkipEmpty())) {
      m.shape.push_back(std::stoll(std::string(d)));
    }
    m.begin = std::stoll(begin_it->second);
  } catch (const std::exception&) {
    return absl::DataLossError(absl::StrCat(path, ": bad slice metadata of '", name, "'"));
  }
  int64_t numel = 1;
  for (int64_t d : m.shape) {
    if (d < 0 || (d > 0 && numel > (int64_t{1} << 40) / d)) {
      return absl::DataLossError(absl::StrCat(path, ": bad shape of '", name, "'"));
    }
    numel *= d;
  }
  if (m.begin < 0 || m.begin + count > numel) {
    return absl::DataLossError(absl::StrCat(path, ": slice of '", name, "' at ", m.begin, " + ",
                                            count, " exceeds its ", numel, " elements"));
  }
  return m;
}

// One slice of a tensor in the manifest's index.
struct IndexedSlice {
  std::string file;
  int64_t begin = 0, count = 0;
};
struct IndexedTensor {
  std::string shape;  // "256,768"
  std::vector<IndexedSlice> slices;
};

// Adds the slices of one shard file to `index`, from its safetensors header alone (no tensor data
// is read, so rank 0 indexes every rank's files cheaply).
absl::Status IndexShardFile(const std::string& dir, const std::string& file,
                            std::map<std::string, IndexedTensor>* index) {
  const std::string path = dir + "/" + file;
  std::ifstream in(path, std::ios::binary);
  unsigned char size_bytes[8];
  if (!in.read(reinterpret_cast<char*>(size_bytes), 8)) {
    return absl::DataLossError(absl::StrCat(path, ": cannot read the header size"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | size_bytes[i];
  if (n > (uint64_t{1} << 30)) return absl::DataLossError(absl::StrCat(path, ": header too large"));
  std::string header(size_t(n), '\0');
  if (!in.read(header.data(), std::streamsize(n))) {
    return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  }
  absl::StatusOr<kernels::json::Value> root = kernels::json::Parse(header);
  if (!root.ok()) return root.status();
  std::map<std::string, std::string> meta;
  if (const kernels::json::Value* m = root->Find("__metadata__")) {
    for (const auto& [key, value] : m->as_object()) meta[key] = value.as_string();
  }
  for (const auto& [name, info] : root->as_object()) {
    if (name == "__metadata__") continue;
    const kernels::json::Value* dims = info.Find("shape");
    if (dims == nullptr || dims->as_array().size() != 1) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' is not 1-D"));
    }
    const int64_t count = dims->as_array()[0].as_int();
    absl::StatusOr<SliceMeta> slice = ReadSliceMeta(meta, name, count, path);
    if (!slice.ok()) return slice.status();
    IndexedTensor& t = (*index)[name];
    t.shape = absl::StrJoin(slice->shape, ",");
    t.slices.push_back({file, slice->begin, count});
  }
  return absl::OkStatus();
}

// Writes one shard file, streamed from the tensors (a save needs no copy of the training state);
// `bytes` and `checksum` receive the file's size and Checksum64, for the manifest.
absl::Status WriteSlices(const std::string& path, const std::vector<TensorSlice>& slices,
                         int64_t* bytes, uint64_t* checksum) {
  kernels::SafetensorsWriter writer;
  std::vector<torch::Tensor> kept;  // the views' storage, until the file is written
  kept.reserve(slices.size());
  for (const TensorSlice& t : slices) {
    torch::Tensor c = t.values.detach().to(torch::kCPU, torch::kFloat32).contiguous().reshape({-1});
    writer.SetMetadata("qat.shape." + t.name, absl::StrJoin(t.shape, ","));
    writer.SetMetadata("qat.begin." + t.name, std::to_string(t.begin));
    writer.AddView(t.name, kernels::DType::kF32, {c.numel()}, c.data_ptr<float>(),
                   c.numel() * sizeof(float));
    kept.push_back(std::move(c));
  }
  *bytes = writer.FileBytes();
  Checksum64Stream sum(static_cast<uint64_t>(*bytes));
  absl::Status s = writer.Write(path, [&sum](const char* p, size_t n) { sum.Update(p, n); });
  *checksum = sum.Finish();
  return s;
}

absl::StatusOr<std::string> SaveShardedCheckpointInto(const fs::path& root, const fs::path& tmp_dir,
                                                      const CheckpointState& state,
                                                      const CheckpointShard& shard,
                                                      comm::ProcessGroup& group,
                                                      int64_t keep_last) {
  const int64_t rank = group.rank(), world = group.size();
  const fs::path final_dir = root / StepDirName(state.step);
  std::error_code ec;
  if (rank == 0) {
    // What failed or killed saves left behind (a full disk stays full until it goes).
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("step-", 0) == 0 && absl::EndsWith(n, ".tmp")) fs::remove_all(e.path(), ec);
    }
    ec.clear();
    fs::create_directories(tmp_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(tmp_dir.string(), ": ", ec.message()));
  }
  absl::Status s = group.Barrier();
  if (!s.ok()) return s;

  // This rank's files, then every rank's sizes and checksums (each fills its own slots).
  const std::string names[2] = {ShardFileName("model", rank, world),
                                ShardFileName("optimizer", rank, world)};
  const std::vector<TensorSlice>* slices[2] = {&shard.model, &shard.optimizer};
  std::vector<int64_t> table(size_t(world) * 4, 0);  // per rank: model bytes, sum, optim bytes, sum
  for (int k = 0; k < 2; ++k) {
    int64_t bytes = 0;
    uint64_t sum = 0;
    s = WriteSlices((tmp_dir / names[k]).string(), *slices[k], &bytes, &sum);
    if (!s.ok()) return s;
    table[size_t(rank) * 4 + 2 * k] = bytes;
    std::memcpy(&table[size_t(rank) * 4 + 2 * k + 1], &sum, sizeof sum);
  }
  FaultPoint("checkpoint", state.step, int(rank));
  if (world > 1) {
    s = group.AllReduce(table.data(), table.data(), int64_t(table.size()), comm::DataType::kI64);
    if (!s.ok()) return s;
  }

  if (rank == 0) {
    s = kernels::WriteFileAtomic((tmp_dir / "recipe.yaml").string(), state.recipe_yaml);
    if (!s.ok()) return s;
    YAML::Emitter m;
    m << YAML::BeginMap;
    m << YAML::Key << "format" << YAML::Value << kFormat;
    m << YAML::Key << "step" << YAML::Value << state.step;
    m << YAML::Key << "world_size" << YAML::Value << world;
    m << YAML::Key << "sharding" << YAML::Value << state.sharding;
    m << YAML::Key << "loss" << YAML::Value << YAML::Precision(17) << state.loss;
    m << YAML::Key << "recipe_hash" << YAML::Value
      << absl::StrFormat("%016x", Checksum64(state.recipe_yaml.data(), state.recipe_yaml.size()));
    m << YAML::Key << "files" << YAML::Value << YAML::BeginMap;
    auto entry = [&m](const std::string& name, int64_t bytes, uint64_t sum) {
      m << YAML::Key << name << YAML::Value << YAML::BeginMap;
      m << YAML::Key << "bytes" << YAML::Value << bytes;
      m << YAML::Key << "checksum" << YAML::Value << absl::StrFormat("%016x", sum);
      m << YAML::EndMap;
    };
    for (int64_t r = 0; r < world; ++r) {
      for (int k = 0; k < 2; ++k) {
        uint64_t sum;
        std::memcpy(&sum, &table[size_t(r) * 4 + 2 * k + 1], sizeof sum);
        entry(ShardFileName(k == 0 ? "model" : "optimizer", r, world), table[size_t(r) * 4 + 2 * k],
              sum);
      }
    }
    entry("recipe.yaml", int64_t(state.recipe_yaml.size()),
          Checksum64(state.recipe_yaml.data(), state.recipe_yaml.size()));
    m << YAML::EndMap;
    // The tensor index: every tensor's whole shape and where its slices are.
    std::map<std::string, IndexedTensor> index;
    for (int64_t r = 0; r < world; ++r) {
      for (const char* kind : {"model", "optimizer"}) {
        s = IndexShardFile(tmp_dir.string(), ShardFileName(kind, r, world), &index);
        if (!s.ok()) return s;
      }
    }
    m << YAML::Key << "tensors" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, t] : index) {
      m << YAML::Key << name << YAML::Value << YAML::BeginMap;
      m << YAML::Key << "shape" << YAML::Value << t.shape;
      m << YAML::Key << "slices" << YAML::Value << YAML::BeginSeq;
      for (const IndexedSlice& sl : t.slices) {
        m << YAML::Flow << YAML::BeginSeq << sl.file << sl.begin << sl.count << YAML::EndSeq;
      }
      m << YAML::EndSeq << YAML::EndMap;
    }
    m << YAML::EndMap << YAML::EndMap;
    std::string manifest = std::string(m.c_str()) + "\n";
    manifest +=
        absl::StrFormat("%s%016x\n", kManifestSeal, Checksum64(manifest.data(), manifest.size()));
    s = kernels::WriteFileAtomic((tmp_dir / kManifest).string(), manifest);
    if (!s.ok()) return s;

    fs::remove_all(final_dir, ec);  // an older checkpoint of the same step (a rerun) is replaced
    fs::rename(tmp_dir, final_dir, ec);
    if (ec)
      return absl::InternalError(absl::StrCat(final_dir.string(), ": rename: ", ec.message()));
    s = FsyncPath(root.string());
    if (!s.ok()) return s;

    // Keep the newest keep_last checkpoints.
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos) {
        dirs.push_back(e.path());
      }
    }
    std::sort(dirs.begin(), dirs.end());
    for (size_t i = 0; i + keep_last < dirs.size(); ++i) fs::remove_all(dirs[i], ec);
  }
  s = group.Barrier();
  if (!s.ok()) return s;
  return final_dir.string();
}

}  // namespace

absl::StatusOr<std::string> SaveShardedCheckpoint(const std::string& run_dir,
                                                  const CheckpointState& state,
                                                  const CheckpointShard& shard,
                                                  comm::ProcessGroup& group, int64_t keep_last) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path tmp_dir = root / (StepDirName(state.step) + ".tmp");
  absl::StatusOr<std::string> saved =
      SaveShardedCheckpointInto(root, tmp_dir, state, shard, group, keep_last);
  if (!saved.ok() && group.rank() == 0) {
    std::error_code ec;  // a failed save must not hold the disk space it took
    fs::remove_all(tmp_dir, ec);
  }
  return saved;
}

absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const CheckpointState& state,
                                           int64_t keep_last) {
  CheckpointShard shard;
  auto whole = [](const TensorMap& m, std::vector<TensorSlice>* out) {
    for (const auto& [name, t] : m) out->push_back({name, t.sizes().vec(), 0, t.reshape({-1})});
  };
  whole(state.model, &shard.model);
  whole(state.optimizer, &shard.optimizer);
  std::shared_ptr<comm::ProcessGroup> one = comm::NewSingleProcessGroup();
  return SaveShardedCheckpoint(run_dir, state, shard, *one, keep_last);
}

namespace {

absl::StatusOr<YAML::Node> ReadManifest(const std::string& ckpt_dir, bool* sealed = nullptr) {
  const std::string path = (fs::path(ckpt_dir) / kManifest).string();
  absl::StatusOr<std::string> text = kernels::ReadFile(path);
  if (!text.ok()) return text.status();
  const size_t seal = text->rfind(absl::StrCat("\n", kManifestSeal));
  if (sealed != nullptr) *sealed = seal != std::string::npos;
  if (seal != std::string::npos) {
    const std::string body = text->substr(0, seal + 1);
    const std::string want(
        absl::StripAsciiWhitespace(text->substr(seal + 1 + std::strlen(kManifestSeal))));
    const std::string got = absl::StrFormat("%016x", Checksum64(body.data(), body.size()));
    if (want != got) {
      return absl::DataLossError(absl::StrCat(path, ": the manifest's checksum is ", got,
                                              ", its last line says ", want,
                                              ": it was edited or damaged after it was written"));
    }
  }
  try {
    YAML::Node node = YAML::Load(*text);
    if (!node.IsMap() || !node["format"] || node["format"].as<std::string>() != kFormat) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a ", kFormat, " manifest"));
    }
    // step-N directories only: a checkpoint copied elsewhere may have any name.
    const std::string dir_name = fs::path(ckpt_dir).lexically_normal().filename().string();
    int64_t dir_step = 0;
    if (absl::StartsWith(dir_name, "step-") && absl::SimpleAtoi(dir_name.substr(5), &dir_step) &&
        node["step"] && node["step"].as<int64_t>() != dir_step) {
      return absl::DataLossError(absl::StrCat(path, ": step ", node["step"].as<int64_t>(),
                                              " does not match the directory's name, ", dir_name));
    }
    return node;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed manifest: ", e.what()));
  }
}

// Reads a file listed in the manifest and checks its size and checksum.
absl::StatusOr<std::string> ReadVerified(const std::string& ckpt_dir, const YAML::Node& manifest,
                                         const std::string& name) {
  const std::string path = (fs::path(ckpt_dir) / name).string();
  YAML::Node entry = manifest["files"][name];
  if (!entry) return absl::DataLossError(absl::StrCat(path, ": not listed in the manifest"));
  absl::StatusOr<std::string> bytes = kernels::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  try {
    const int64_t expected_size = entry["bytes"].as<int64_t>();
    if (static_cast<int64_t>(bytes->size()) != expected_size) {
      return absl::DataLossError(absl::StrCat(path, ": size ", bytes->size(),
                                              " bytes, the manifest says ", expected_size));
    }
    const std::string expected = entry["checksum"].as<std::string>();
    const std::string actual = absl::StrFormat("%016x", Checksum64(bytes->data(), bytes->size()));
    if (actual != expected) {
      return absl::DataLossError(
          absl::StrCat(path, ": checksum ", actual, " does not match the manifest's ", expected));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(ckpt_dir, "/", kManifest, ": entry '", name, "' is malformed: ", e.what()));
  }
  return bytes;
}

// Adds the slices of one shard file to `pieces` (name -> whole shape and its slices).
struct Pieces {
  std::vector<int64_t> shape;
  std::vector<std::pair<int64_t, torch::Tensor>> slices;  // begin, values
};

absl::Status ParseSlices(std::string bytes, const std::string& path,
                         std::map<std::string, Pieces>* pieces) {
  absl::StatusOr<kernels::SafetensorsFile> file =
      kernels::SafetensorsFile::Parse(std::move(bytes), path);
  if (!file.ok()) return file.status();
  const std::map<std::string, std::string>& meta = file->metadata();
  for (const kernels::TensorInfo& info : file->tensors()) {
    if (info.shape.size() != 1) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", info.name,
                                              "' is not a 1-D slice with qat.shape/qat.begin"));
    }
    absl::StatusOr<SliceMeta> slice = ReadSliceMeta(meta, info.name, info.shape[0], path);
    if (!slice.ok()) return slice.status();
    const std::vector<int64_t>& shape = slice->shape;
    const int64_t begin = slice->begin;
    Pieces& p = (*pieces)[info.name];
    if (!p.slices.empty() && p.shape != shape) {
      return absl::DataLossError(
          absl::StrCat(path, ": '", info.name, "' has another shape in another shard"));
    }
    p.shape = shape;
    absl::StatusOr<std::vector<float>> values = file->ReadF32(info.name);
    if (!values.ok()) return values.status();
    p.slices.emplace_back(
        begin, torch::from_blob(values->data(), {info.shape[0]}, torch::kFloat32).clone());
  }
  return absl::OkStatus();
}

// Whole tensors from their slices; every element must be covered exactly once.
absl::StatusOr<TensorMap> Assemble(std::map<std::string, Pieces>& pieces, const std::string& dir) {
  TensorMap out;
  for (auto& [name, p] : pieces) {
    std::sort(p.slices.begin(), p.slices.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    torch::Tensor whole = torch::empty(p.shape, torch::kFloat32);
    torch::Tensor flat = whole.view({-1});
    int64_t next = 0;
    for (const auto& [begin, values] : p.slices) {
      if (begin != next) {
        return absl::DataLossError(absl::StrCat(dir, ": tensor '", name, "' has ",
                                                begin < next ? "overlapping slices" : "a gap",
                                                " at element ", std::min(begin, next)));
      }
      flat.narrow(0, begin, values.numel()).copy_(values);
      next = begin + values.numel();
    }
    if (next != flat.numel()) {
      return absl::DataLossError(absl::StrCat(dir, ": tensor '", name, "' is incomplete: ", next,
                                              " of ", flat.numel(), " elements"));
    }
    out[name] = whole;
  }
  return out;
}

// Reads, verifies and assembles every shard file of one kind ("model" or "optimizer").
absl::StatusOr<TensorMap> LoadKind(const std::string& ckpt_dir, const YAML::Node& manifest,
                                   int64_t world, const char* kind) {
  std::map<std::string, Pieces> pieces;
  for (int64_t r = 0; r < world; ++r) {
    const std::string name = ShardFileName(kind, r, world);
    absl::StatusOr<std::string> bytes = ReadVerified(ckpt_dir, manifest, name);
    if (!bytes.ok()) return bytes.status();
    absl::Status s = ParseSlices(std::move(*bytes), (fs::path(ckpt_dir) / name).string(), &pieces);
    if (!s.ok()) return s;
  }
  return Assemble(pieces, ckpt_dir);
}

}  // namespace

absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& ckpt_dir, bool load_optimizer) {
  absl::StatusOr<YAML::Node> manifest = ReadManifest(ckpt_dir);
  if (!manifest.ok()) return manifest.status();
  CheckpointState state;
  try {
    state.step = (*manifest)["step"].as<int64_t>();
    state.world_size = (*manifest)["world_size"].as<int64_t>();
    state.sharding = (*manifest)["sharding"].as<std::string>();
    state.loss = (*manifest)["loss"].as<double>();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(ckpt_dir, "/", kManifest, ": malformed: ", e.what()));
  }
  absl::StatusOr<std::string> recipe = ReadVerified(ckpt_dir, *manifest, "recipe.yaml");
  if (!recipe.ok()) return recipe.status();
  state.recipe_yaml = *recipe;
  if (state.world_size < 1 || state.world_size > 1000000) {
    return absl::DataLossError(
        absl::StrCat(ckpt_dir, "/", kManifest, ": bad world_size ", state.world_size));
  }
  absl::StatusOr<TensorMap> tensors = LoadKind(ckpt_dir, *manifest, state.world_size, "model");
  if (!tensors.ok()) return tensors.status();
  state.model = std::move(*tensors);
  if (load_optimizer) {
    tensors = LoadKind(ckpt_dir, *manifest, state.world_size, "optimizer");
    if (!tensors.ok()) return tensors.status();
    state.optimizer = std::move(*tensors);
  }
  return state;
}

absl::StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& ckpt_dir) {
  CheckpointInfo info;
  absl::StatusOr<YAML::Node> manifest = ReadManifest(ckpt_dir, &info.manifest_sealed);
  if (!manifest.ok()) return manifest.status();
  info.dir = ckpt_dir;
  info.valid = true;
  try {
    info.step = (*manifest)["step"].as<int64_t>();
    info.world_size = (*manifest)["world_size"].as<int64_t>();
    info.sharding = (*manifest)["sharding"].as<std::string>();
    info.loss = (*manifest)["loss"].as<double>();
    info.recipe_hash = (*manifest)["recipe_hash"].as<std::string>();
    for (const auto& kv : (*manifest)["files"]) {
      CheckpointFileStatus f;
      f.name = kv.first.as<std::string>();
      f.bytes = kv.second["bytes"].as<int64_t>();
      f.checksum = kv.second["checksum"].as<std::string>();
      absl::StatusOr<std::string> bytes = ReadVerified(ckpt_dir, *manifest, f.name);
      f.status = bytes.ok() ? "ok" : std::string(bytes.status().message());
      info.valid = info.valid && bytes.ok();
      info.files.push_back(f);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(ckpt_dir, "/", kManifest, ": malformed: ", e.what()));
  }
  return info;
}

std::string FindLatestCheckpoint(const std::string& run_dir, std::vector<std::string>* skipped) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos) {
      dirs.push_back(e.path());
    }
  }
  std::sort(dirs.rbegin(), dirs.rend());
  for (const fs::path& d : dirs) {
    // A full verification: every listed file's size and checksum.
    absl::StatusOr<CheckpointState> st = LoadCheckpoint(d.string(), /*load_optimizer=*/true);
    if (st.ok()) return d.string();
    if (skipped) skipped->push_back(std::string(st.status().message()));
  }
  return "";
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path,
                                              std::vector<std::string>* skipped) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / kManifest, ec)) return path;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such checkpoint or run directory"));
  }
  std::string latest = FindLatestCheckpoint(path, skipped);
  if (latest.empty()) {
    return absl::NotFoundError(
        absl::StrCat(path, ": holds no valid checkpoint (looked in ", path, "/checkpoints)"));
  }
  return latest;
}

}  // namespace qat::trainer
