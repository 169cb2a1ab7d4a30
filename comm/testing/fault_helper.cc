// comm_fault_helper MODE: a two-rank job in which rank 1 fails while rank 0 waits in a
// collective. The job must end, non-zero, within a bound (checked by expect_job_fails.cmake):
//   kill   rank 1 dies by SIGKILL (mpirun notices, or rank 0 times out and aborts the job);
//   hang   rank 1 never joins (rank 0 gets DeadlineExceeded after 3 s and calls AbortJob);
//   error  rank 1 hits an error and calls AbortJob itself;
//   orphan rank 0 skips the collective and exits; rank 1 times out and, against the rules, exits
//          normally: with its collective still pending it must abort the job at exit (MPI
//          finalisation would crash or hang).
// Otherwise rank 0 aborts the job on any comm error, as a program using qat must.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "comm/process_group.h"

int main(int argc, char** argv) {
  using qat::comm::AbortJob;
  const std::string mode = argc == 2 ? argv[1] : "";
  if (mode != "kill" && mode != "hang" && mode != "error" && mode != "orphan") {
    std::fprintf(stderr, "usage: comm_fault_helper kill|hang|error|orphan\n");
    return 2;
  }
  auto world = qat::comm::MpiWorld();
  if (!world.ok()) AbortJob(world.status().ToString());
  // Before the group: a pending collective may write into it until the group is gone.
  std::vector<float> data(1000, 1.0f);
  qat::comm::ProcessGroupOptions options;
  options.timeout_s = 3;
  auto group = qat::comm::NewMpiGroup(options);
  if (!group.ok()) AbortJob(group.status().ToString());
  if (absl::Status s = (*group)->Barrier(); !s.ok()) AbortJob(s.ToString());
  if ((*group)->rank() == 1) {
    if (mode == "kill") raise(SIGKILL);
    if (mode == "hang") sleep(120);
    if (mode == "error") AbortJob("rank 1 failed on purpose");
  }
  if (mode == "orphan" && (*group)->rank() == 0) return 0;
  absl::Status s = (*group)->AllReduce(data.data(), data.data(), 1000, qat::comm::DataType::kF32);
  if (mode == "orphan") {
    std::fprintf(stderr, "rank %d: %s; exiting without AbortJob\n", (*group)->rank(),
                 s.ToString().c_str());
    return 0;
  }
  if (!s.ok()) AbortJob(s.ToString());
  std::printf("rank %d: the collective unexpectedly succeeded\n", (*group)->rank());
  return 0;
}
