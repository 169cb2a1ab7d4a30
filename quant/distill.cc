#include "quant/distill.h"

#include <torch/torch.h>

namespace qat::quant {
namespace {
// Losses are computed in fp32 at least (fp64 inputs stay fp64: the gradient checks use them).
torch::Tensor AtLeastFloat(const torch::Tensor& x) {
  return (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf)
             ? x.to(torch::kFloat32)
             : x;
}
}  // namespace

torch::Tensor KlDistillLoss(const torch::Tensor& student_logits,
                            const torch::Tensor& teacher_logits, double temperature) {
  const int64_t vocab = student_logits.size(-1);
  torch::Tensor s = AtLeastFloat(student_logits.reshape({-1, vocab})) / temperature;
  torch::Tensor t = AtLeastFloat(teacher_logits.reshape({-1, vocab})).detach() / temperature;
  torch::Tensor log_p_teacher = torch::log_softmax(t, -1);
  torch::Tensor log_p_student = torch::log_softmax(s, -1);
  torch::Tensor kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1);
  return kl.mean() * (temperature * temperature);
}

torch::Tensor HiddenStateMse(const std::vector<torch::Tensor>& student,
                             const std::vector<torch::Tensor>& teacher) {
  TORCH_CHECK(!student.empty() && student.size() == teacher.size(),
              "hidden-state distillation needs one teacher tensor per student block");
  torch::Tensor total;
  for (size_t l = 0; l < student.size(); ++l) {
    torch::Tensor d = AtLeastFloat(student[l]) - AtLeastFloat(teacher[l]).detach();
    torch::Tensor mse = d.pow(2).mean();
    total = total.defined() ? total + mse : mse;
  }
  return total / double(student.size());
}

torch::Tensor CrossEntropyLoss(const torch::Tensor& logits, const torch::Tensor& targets) {
  const int64_t vocab = logits.size(-1);
  return torch::nn::functional::cross_entropy(AtLeastFloat(logits.reshape({-1, vocab})),
                                              targets.reshape({-1}));
}

}  // namespace qat::quant
