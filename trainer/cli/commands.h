// The `qat` subcommands. Each returns the process exit code and prints its own errors.
#pragma once

namespace qat::cli {

int PrepMain(int argc, char** argv);    // qat prep
int TrainMain(int argc, char** argv);   // qat train
int ExportMain(int argc, char** argv);  // qat export
int EvalMain(int argc, char** argv);    // qat eval
int BenchMain(int argc, char** argv);   // qat bench
int BenchTrainMain(int argc, char** argv);  // qat bench train (argv[1] = "train")
int BenchInteropMain(int argc, char** argv);  // qat bench interop (cmd_bench_interop.cc)
int RecipeMain(int argc, char** argv);  // qat recipe check|show|schema
int CkptMain(int argc, char** argv);    // qat ckpt inspect
int QuantizeMain(int argc, char** argv);  // qat quantize (post-training quantization)
int PlanMain(int argc, char** argv);      // qat plan (per-layer bit allocation, cmd_plan.cc)

// Prints "qat <command>: error: <message>" to stderr and returns 1.
int Fail(const char* command, const std::string& message);

}  // namespace qat::cli
