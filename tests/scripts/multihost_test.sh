#!/usr/bin/env bash
# Several nodes on one machine (ctest; issue 19): two network namespaces with one host name, each
# its own address on a private veth pair, OpenMPI's TCP transport between them, and OpenMPI's
# remote launcher pointed at a wrapper that runs its command inside the other namespace. Shows:
# - ddp and fsdp across the two "hosts" give the checkpoint of two ranks on one host, and zero2 with
#   two ranks on each host (--oversubscribe over a hostfile) that of four, byte for byte, at equal
#   threads per rank;
# - the ranks tell the two nodes apart although they share a host name (MPI's shared-memory
#   split, not a host-name hash), and each node picks its threads from its own cores divided by
#   its own ranks;
# - qat-run hands mpirun options through (--mca ...) and checks hostfile slots;
# - a run directory that the remote node does not share is refused at start, naming the rank;
# - SIGKILL of the remote rank ends the job with a message naming that host.
# Needs root, `ip netns` and unshare; where they are missing it says so and exits 77 (ctest:
# skipped, not passed).
#   multihost_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
skip() { echo "multihost_test: SKIPPED: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces)"
command -v ip >/dev/null && command -v unshare >/dev/null || skip "needs ip (iproute2) and unshare"
command -v mpirun >/dev/null || skip "needs mpirun"
source "$src/tests/scripts/tiny_run.sh"
tiny_setup multihost "$qat"

# Two namespaces joined by a veth pair. Names carry the PID: parallel runs (two clones) coexist.
nsa=qmhA$$ nsb=qmhB$$ va=qmva$$ vb=qmvb$$
addr_a=10.203.0.1 addr_b=10.203.0.2
cleanup() { ip netns del "$nsa" 2>/dev/null || true; ip netns del "$nsb" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$nsa" && ip netns add "$nsb" || skip "cannot create network namespaces (ip netns add)"
ip link add "$va" type veth peer name "$vb" || skip "cannot create a veth pair"
ip link set "$va" netns "$nsa" && ip link set "$vb" netns "$nsb"
ip -n "$nsa" addr add "$addr_a/24" dev "$va" && ip -n "$nsb" addr add "$addr_b/24" dev "$vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "$va" up && ip -n "$nsb" link set "$vb" up
# The wrapper below needs UTS and mount namespaces and tmpfs mounts (CAP_SYS_ADMIN): a container
# that allows network namespaces but not these skips too.
mkdir -p "$work/probe"
ip netns exec "$nsb" unshare --uts --mount sh -c "hostname qat-probe && mount -t tmpfs none '$work/probe'" \
  2>/dev/null || skip "cannot make UTS/mount namespaces or mount tmpfs (unshare, CAP_SYS_ADMIN)"

# OpenMPI's rsh launcher calls `agent HOST COMMAND...` (as it would call ssh): run the command in
# HOST's namespace, under the host name MH_NAME_B (default: the first's, qat-twin), optionally
# with MH_HIDE covered by an empty tmpfs (a directory this node does not share).
cat > "$work/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case \$host in $addr_b) ns=$nsb ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
hide=\${MH_HIDE:+mount -t tmpfs none \$MH_HIDE &&}
exec ip netns exec \$ns unshare --uts --mount sh -c "\$hide hostname \${MH_NAME_B:-qat-twin} && \$*"
AGENT
chmod +x "$work/agent"
printf '%s slots=1\n%s slots=1\n' "$addr_a" "$addr_b" > "$work/hosts"
mpi=(--mca plm_rsh_agent "$work/agent" --mca btl tcp,vader,self --mca btl_tcp_if_include 10.203.0.0/24
     --mca oob_tcp_if_include 10.203.0.0/24)

cat > "$work/recipe.yaml" <<YAML
base: base.yaml
run: {save_every: 0}
quant: {method: ternary}
train: {steps: 4}
YAML
status=0
fail() { echo "FAIL: $*"; status=1; }
one_host() {  # DIR [--set ...]: two ranks (PPN=2: four) on this machine (the root namespace)
  local dir=$1; shift
  "$src/launch/qat-run" -n $((2 * ${PPN:-1})) -- qat train "$work/recipe.yaml" --set "run.dir=$work/$dir" "$@" \
    > "$work/$dir.log" 2>&1 || { cat "$work/$dir.log"; fail "$dir did not train"; }
}
two_hosts() {  # DIR [--set ...]: one rank in each namespace (PPN: more); mpirun in the first
  local dir=$1; shift
  local n=$((2 * ${PPN:-1}))
  ip netns exec "$nsa" unshare --uts sh -c 'hostname "$0" && exec "$@"' "${MH_NAME_A:-qat-twin}" \
    timeout 120 "$src/launch/qat-run" -n "$n" --hostfile "$work/hosts" --ppn "${PPN:-1}" ${PPN:+--oversubscribe} "${mpi[@]}" \
    -x QAT_FAULT_KILL -x QAT_FAULT_ONCE \
    -- qat train "$work/recipe.yaml" --set "run.dir=$work/$dir" "$@" > "$work/$dir.log" 2>&1
}
same_checkpoint() {  # A B
  local f n=0
  for f in "$work/$1"/checkpoints/step-00000004/*.safetensors; do
    n=$((n + 1))
    cmp -s "$f" "$work/$2/checkpoints/step-00000004/$(basename "$f")" ||
      fail "$2: $(basename "$f") differs from $1"
  done
  ((n > 0)) || fail "$1: no checkpoint"
}

# The agent reads MH_HIDE from mpirun's environment; the fault injection goes to every rank.
export MH_HIDE="" QAT_FAULT_KILL="" QAT_FAULT_ONCE=$work/fault-once
# ddp at one thread per rank (train.threads) ...
two_hosts two-ddp --set train.sharding=ddp --set train.threads=1 || { cat "$work/two-ddp.log"; fail "two-ddp did not train"; }
grep -q "(2 nodes): node 0 (qat-twin): 1 rank, [0-9]* cores* -> 1 thread (train.threads); node 1 (qat-twin): 1 rank, [0-9]* cores* -> 1 thread" "$work/two-ddp.log" ||
  { grep threads "$work/two-ddp.log"; fail "two-ddp: the ranks did not see two nodes of one rank each"; }
one_host one-ddp --set train.sharding=ddp --set train.threads=1
same_checkpoint one-ddp two-ddp
# ... fsdp with the threads each node picks (its cores for its one rank), then one host at those.
unset OMP_NUM_THREADS
two_hosts two-fsdp --set train.sharding=fsdp || { cat "$work/two-fsdp.log"; fail "two-fsdp did not train"; }
threads=$(sed -n 's/.*node 1 (qat-twin): 1 rank, \([0-9]*\) cores* -> \1 threads* (cores \/ ranks).*/\1/p' "$work/two-fsdp.log")
[ -n "$threads" ] || { grep threads "$work/two-fsdp.log"; fail "two-fsdp: no per-node thread choice in the log"; threads=1; }
one_host one-fsdp --set train.sharding=fsdp --set "train.threads=$threads"
grep -q "node 0 (.*): 2 ranks, [0-9]* cores* -> $threads threads* (train.threads)" "$work/one-fsdp.log" || fail "one-fsdp: threads not as set"
same_checkpoint one-fsdp two-fsdp
# Four ranks, two per host, on a hostfile of one slot per host (--oversubscribe): each node divides
# its cores between its two ranks; zero2 across the hosts matches four ranks on one host. These
# two hosts have names of their own: OpenMPI 4.1's TCP transport crashes (a segfault in
# MPI_Comm_split_type) with two ranks on each of two namespaces of one name, which share this
# machine's /tmp and /dev/shm; real nodes of one name have their own.
MH_NAME_A=qat-a MH_NAME_B=qat-b PPN=2 two_hosts two-4 --set train.sharding=zero2 ||
  { cat "$work/two-4.log"; fail "two-4 did not train"; }
line=$(grep "threads per rank" "$work/two-4.log" || true)
cores=$(sed -n 's/.*node 1 (qat-b): 2 ranks, \([0-9]*\) cores*.*/\1/p' <<<"$line")
want=$(( ${cores:-0} / 2 > 0 ? ${cores:-0} / 2 : 1 ))
grep -q "node 0 (qat-a): 2 ranks, $cores cores* -> $want threads* (cores / ranks); node 1 (qat-b): 2 ranks, $cores cores* -> $want threads* (cores / ranks)" <<<"$line" ||
  fail "two-4: not cores / 2 ranks on each node: $line"
PPN=2 one_host one-4 --set train.sharding=zero2 --set "train.threads=$want"
same_checkpoint one-4 two-4
export OMP_NUM_THREADS=1

# Not a shared directory: the second node sees an empty tmpfs over the run's parent directory.
mkdir -p "$work/hidden"
MH_HIDE=$work/hidden two_hosts hidden/run && fail "a run directory the remote node cannot see was accepted"
grep -q "is not one directory for every rank: rank 1 (node 1, host qat-twin) does not see" "$work/hidden/run.log" ||
  { cat "$work/hidden/run.log"; fail "no error naming the rank that does not share run.dir"; }

# Slots: two ranks per host need slots=2 or --oversubscribe.
"$src/launch/qat-run" -n 4 --hostfile "$work/hosts" -- qat train "$work/recipe.yaml" \
  > "$work/slots.log" 2>&1 && fail "4 ranks on 2 slots were started"
grep -q "gives 2 slot(s) for 4 ranks: raise its slots=N, or pass --oversubscribe" "$work/slots.log" ||
  { cat "$work/slots.log"; fail "no slots message"; }

# The remote rank killed (SIGKILL at step 2): the job ends, naming the host.
start=$(date +%s)
QAT_FAULT_KILL=step:2:1 two_hosts killed --set train.sharding=ddp && fail "the job survived its killed rank"
took=$(( $(date +%s) - start ))
grep -Eq "rank 1 .*on node ($addr_b|qat-twin).*(signal 9|Killed)" "$work/killed.log" ||
  { cat "$work/killed.log"; fail "the end of the job does not name the killed rank's host"; }
((took < 90)) || fail "the job took $took s to end after its rank was killed"

[ $status -eq 0 ] && echo "multihost_test: ddp, fsdp (2 ranks) and zero2 (4 ranks) across two namespaced hosts match one host byte for byte (threads per rank by the node rule: $threads with 1 rank per node, $want with 2); unshared run.dir refused; killed remote rank named (job ended in $took s)"
exit $status
