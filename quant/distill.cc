#include "quant/distill.h"

#include <torch/torch.h>

namespace qat::quant {

torch::Tensor KlDistillLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                            double temperature) {
  const int64_t vocab = student_logits.size(-1);
  torch::Tensor s = student_logits.reshape({-1, vocab}).to(torch::kFloat32) / temperature;
  torch::Tensor t = teacher_logits.reshape({-1, vocab}).to(torch::kFloat32).detach() / temperature;
  torch::Tensor log_p_teacher = torch::log_softmax(t, -1);
  torch::Tensor log_p_student = torch::log_softmax(s, -1);
  torch::Tensor kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1);
  return kl.mean() * (temperature * temperature);
}

torch::Tensor CrossEntropyLoss(const torch::Tensor& logits, const torch::Tensor& targets) {
  const int64_t vocab = logits.size(-1);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}).to(torch::kFloat32),
                                              targets.reshape({-1}));
}

}  // namespace qat::quant
