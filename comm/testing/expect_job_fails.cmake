# Runs an MPI job that must fail, and checks that it ends non-zero within MAX_SECONDS and that
# its output matches EXPECT (a regular expression; optional). Usage:
#   cmake -DMPIEXEC=mpirun -DNP=2 -DPROGRAM=path -DARGS=mode -DMAX_SECONDS=30 [-DEXPECT=regex]
#         -P expect_job_fails.cmake
foreach(var MPIEXEC NP PROGRAM MAX_SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "expect_job_fails.cmake: -D${var}=... is required")
  endif()
endforeach()
string(TIMESTAMP start "%s")
execute_process(
  COMMAND ${MPIEXEC} -np ${NP} --oversubscribe --bind-to none ${PROGRAM} ${ARGS}
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${MAX_SECONDS})
string(TIMESTAMP end "%s")
math(EXPR seconds "${end} - ${start}")
message("${out}${err}")
if(NOT result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the job did not end within ${MAX_SECONDS} s (${result})")
endif()
if(result EQUAL 0)
  message(FATAL_ERROR "the job exited 0; a failed rank must make it fail")
endif()
if(DEFINED EXPECT AND NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "the job's output does not match \"${EXPECT}\"")
endif()
message(STATUS "ok: the job failed with exit code ${result} after about ${seconds} s")
