#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
constexpr char kManifest[] = "manifest.yaml";
constexpr char kFormat[] = "qat-checkpoint-1";

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

uint64_t Checksum64(const void* data, size_t size) {
  // 8 bytes at a time: xor, multiply by a large odd constant, rotate; then a final avalanche.
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x9E3779B97F4A7C15ull ^ size;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h = (h << 31) | (h >> 33);
  }
  for (; i < size; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 33;
  return h;
}

absl::Status SaveTensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata) {
  kernels::SafetensorsWriter writer;
  for (const auto& [k, v] : metadata) writer.SetMetadata(k, v);
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    writer.Add(name, kernels::DType::kF32, c.sizes().vec(), c.data_ptr<float>(),
               c.numel() * sizeof(float));
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

absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const CheckpointState& state,
                                           int64_t keep_last) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / StepDirName(state.step);
  const fs::path tmp_dir = root / (StepDirName(state.step) + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp_dir.string(), ": ", ec.message()));

  absl::Status s = SaveTensors((tmp_dir / "model.safetensors").string(), state.model);
  if (s.ok()) s = SaveTensors((tmp_dir / "optimizer.safetensors").string(), state.optimizer);
  if (s.ok()) {
    s = kernels::WriteFileAtomic((tmp_dir / "recipe.yaml").string(), state.recipe_yaml);
  }
  if (!s.ok()) return s;

  YAML::Emitter m;
  m << YAML::BeginMap;
  m << YAML::Key << "format" << YAML::Value << kFormat;
  m << YAML::Key << "step" << YAML::Value << state.step;
  m << YAML::Key << "world_size" << YAML::Value << state.world_size;
  m << YAML::Key << "sharding" << YAML::Value << state.sharding;
  m << YAML::Key << "loss" << YAML::Value << YAML::Precision(17) << state.loss;
  m << YAML::Key << "recipe_hash" << YAML::Value
    << absl::StrFormat("%016x", Checksum64(state.recipe_yaml.data(), state.recipe_yaml.size()));
  m << YAML::Key << "files" << YAML::Value << YAML::BeginMap;
  for (const char* name : {"model.safetensors", "optimizer.safetensors", "recipe.yaml"}) {
    absl::StatusOr<std::string> bytes = kernels::ReadFile((tmp_dir / name).string());
    if (!bytes.ok()) return bytes.status();
    m << YAML::Key << name << YAML::Value << YAML::BeginMap;
    m << YAML::Key << "bytes" << YAML::Value << static_cast<int64_t>(bytes->size());
    m << YAML::Key << "checksum" << YAML::Value
      << absl::StrFormat("%016x", Checksum64(bytes->data(), bytes->size()));
    m << YAML::EndMap;
  }
  m << YAML::EndMap << YAML::EndMap;
  s = kernels::WriteFileAtomic((tmp_dir / kManifest).string(), std::string(m.c_str()) + "\n");
  if (!s.ok()) return s;

  fs::remove_all(final_dir, ec);  // an older checkpoint of the same step (a rerun) is replaced
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(final_dir.string(), ": rename: ", ec.message()));
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
  return final_dir.string();
}

namespace {

absl::StatusOr<YAML::Node> ReadManifest(const std::string& ckpt_dir) {
  const std::string path = (fs::path(ckpt_dir) / kManifest).string();
  absl::StatusOr<std::string> text = kernels::ReadFile(path);
  if (!text.ok()) return text.status();
  try {
    YAML::Node node = YAML::Load(*text);
    if (!node.IsMap() || !node["format"] || node["format"].as<std::string>() != kFormat) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a ", kFormat, " manifest"));
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
    return absl::InvalidArgumentError(absl::StrCat(ckpt_dir, "/", kManifest, ": entry '", name,
                                                   "' is malformed: ", e.what()));
  }
  return bytes;
}

absl::StatusOr<TensorMap> ParseTensors(std::string bytes, const std::string& path) {
  absl::StatusOr<kernels::SafetensorsFile> file =
      kernels::SafetensorsFile::Parse(std::move(bytes), path);
  if (!file.ok()) return file.status();
  TensorMap out;
  for (const kernels::TensorInfo& info : file->tensors()) {
    absl::StatusOr<std::vector<float>> values = file->ReadF32(info.name);
    if (!values.ok()) return values.status();
    out[info.name] = torch::from_blob(values->data(), info.shape, torch::kFloat32).clone();
  }
  return out;
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
  absl::StatusOr<std::string> model = ReadVerified(ckpt_dir, *manifest, "model.safetensors");
  if (!model.ok()) return model.status();
  absl::StatusOr<TensorMap> tensors =
      ParseTensors(std::move(*model), (fs::path(ckpt_dir) / "model.safetensors").string());
  if (!tensors.ok()) return tensors.status();
  state.model = std::move(*tensors);
  if (load_optimizer) {
    absl::StatusOr<std::string> optim = ReadVerified(ckpt_dir, *manifest, "optimizer.safetensors");
    if (!optim.ok()) return optim.status();
    tensors = ParseTensors(std::move(*optim), (fs::path(ckpt_dir) / "optimizer.safetensors").string());
    if (!tensors.ok()) return tensors.status();
    state.optimizer = std::move(*tensors);
  }
  return state;
}

absl::StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& ckpt_dir) {
  absl::StatusOr<YAML::Node> manifest = ReadManifest(ckpt_dir);
  if (!manifest.ok()) return manifest.status();
  CheckpointInfo info;
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
    return absl::NotFoundError(absl::StrCat(path, ": holds no valid checkpoint (looked in ", path,
                                            "/checkpoints)"));
  }
  return latest;
}

}  // namespace qat::trainer
