// Distillation losses: the student learns the frozen teacher's next-token distributions.
#pragma once

#include <torch/types.h>

namespace qat::quant {

// Mean over positions of T^2 * KL(softmax(teacher/T) || softmax(student/T)); the T^2 factor keeps
// the gradient scale independent of the temperature (Hinton et al.). Logits: [..., vocab].
torch::Tensor KlDistillLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                            double temperature);

// Mean token cross entropy; logits [..., vocab], targets [...] int64.
torch::Tensor CrossEntropyLoss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace qat::quant
