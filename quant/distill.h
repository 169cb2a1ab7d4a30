// Distillation losses: the student learns the frozen teacher's next-token distributions.
#pragma once

#include <torch/types.h>

#include <vector>

namespace qat::quant {

// Mean over positions of T^2 * KL(softmax(teacher/T) || softmax(student/T)); the T^2 factor keeps
// the gradient scale independent of the temperature (Hinton et al.). Logits: [..., vocab].
torch::Tensor KlDistillLoss(const torch::Tensor& student_logits,
                            const torch::Tensor& teacher_logits, double temperature);

// Hidden-state distillation: mean over blocks l of mean((student[l] - teacher[l])^2), the mean
// over every element of block l's output [B, T, hidden] (teacher detached). Both lists hold one
// tensor per block, of equal shapes (the caller checks the two models agree in depth and width).
torch::Tensor HiddenStateMse(const std::vector<torch::Tensor>& student,
                             const std::vector<torch::Tensor>& teacher);

// Mean token cross entropy; logits [..., vocab], targets [...] int64.
torch::Tensor CrossEntropyLoss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace qat::quant
