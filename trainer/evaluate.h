// Evaluation of a language model on validation windows, with libtorch (checkpoints) or with the
// packed runtime (exports); both read the same windows, so their perplexities compare directly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokens.h"
#include "kernels/runtime.h"
#include "trainer/model.h"

namespace qat::trainer {

struct LmEval {
  double nll = 0.0;         // mean negative log-likelihood per target token (nats)
  double perplexity = 0.0;  // exp(nll)
  int64_t tokens = 0;       // target tokens scored
  double seconds = 0.0;     // wall time of the forward passes
};

// Scores windows 0..min(max_windows, available)-1 of `val` (each seq_len inputs + targets).
absl::StatusOr<LmEval> EvaluateTorch(CausalLM& model, const data::WindowSampler& val,
                                     int64_t max_windows, int64_t batch_size);
absl::StatusOr<LmEval> EvaluatePacked(const kernels::PackedModel& model,
                                      const data::WindowSampler& val, int64_t max_windows);

// Distribution-level comparison of a (quantized) student q with its teacher p (MISSION.md):
//   EAR = mean over positions of sum_v min(p_v, q_v) = 1 - TV(p, q)
//   top-1 agreement = share of positions where argmax p = argmax q
//   effective candidates = exp(entropy), and the count of tokens with probability > threshold
//   smoothness proxy S = E_sequence ||dCE/dx||_2 at the input embeddings
struct TeacherComparison {
  int64_t positions = 0;
  double ear = 0.0, top1_agreement = 0.0, kl_teacher_student = 0.0;
  double student_nll = 0.0, teacher_nll = 0.0;
  double student_candidates_exp_entropy = 0.0, teacher_candidates_exp_entropy = 0.0;
  double student_candidates_above = 0.0, teacher_candidates_above = 0.0;
  double student_smoothness = 0.0, teacher_smoothness = 0.0;
  // The same proxy at the input of each block l, E||dCE/dh_l|| (index 0: the embeddings, equal to
  // the two above): where in depth a quantizer loses or keeps smoothness.
  std::vector<double> student_block_smoothness, teacher_block_smoothness;
};

// Sums over positions of the per-position statistics above (not yet divided by the count), for
// logits [N, V] of the teacher (p) and the student (q).
struct DistributionSums {
  double ear = 0, top1 = 0, kl = 0, p_exp_entropy = 0, q_exp_entropy = 0, p_above = 0, q_above = 0;
};
DistributionSums CompareDistributions(const torch::Tensor& teacher_logits,
                                      const torch::Tensor& student_logits, double threshold);

absl::StatusOr<TeacherComparison> CompareWithTeacher(CausalLM& student, CausalLM& teacher,
                                                     const data::WindowSampler& val,
                                                     int64_t max_windows, int64_t batch_size,
                                                     double threshold);

struct Generation {
  std::string text;
  int64_t new_tokens = 0;
  double prefill_tokens_per_s = 0.0;
  double decode_tokens_per_s = 0.0;
};
struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 40;
  uint64_t seed = 1;
  // Encodes the prompt and decodes the sample; null: the byte tokenizer. Not owned.
  const data::Tokenizer* tokenizer = nullptr;
};
// Generation with the packed runtime (KV cache). The prompt is BOS (when the tokenizer has one)
// + its tokens; stops at EOS.
absl::StatusOr<Generation> GeneratePacked(const kernels::PackedModel& model,
                                          const std::string& prompt, const SamplingOptions& opt);
// Generation with libtorch (no KV cache: the whole prefix is recomputed per token).
absl::StatusOr<Generation> GenerateTorch(CausalLM& model, const std::string& prompt,
                                         const SamplingOptions& opt);

}  // namespace qat::trainer
