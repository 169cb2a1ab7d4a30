#!/usr/bin/env python3
"""PyTorch eager reference of `qat bench train`'s step (issues 16 and 17), for timing side by side.

The same model and step as qat's trainer (trainer/model.cc, trainer/objective.cc), written the way
a PyTorch user would in eager mode:
  - LLaMA: RMSNorm, rotate-half RoPE, grouped-query causal attention computed as qat does (scores,
    mask, softmax in fp32), SwiGLU; untied embeddings and LM head in full precision;
  - every block linear ternary (BitNet b1.58 absmean per tensor) with a straight-through estimator;
  - distillation from a random full-precision teacher of the same shape: kd_weight * KL(T || S) +
    (1 - kd_weight) * CE at temperature 1;
  - optionally the smoothness regularizer at the embeddings, grad_norm (lambda * B * ||dL/dx||^2)
    or grad_match (against the teacher's CE input gradient), exact (double backward) or finite_diff
    (qat's central difference along the penalised direction, h = fd_step * ||x||);
  - AdamW, global gradient clipping at 1; bf16: matmuls under autocast, fp32 master weights.
Random tokens. Prints one line: "ref: steady state over N steps: X tokens/s, Y s/step; peak memory
Z GB" (GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS). Python is only for
comparison scripts (DEVELOPERS.md); this file is not part of qat.
"""
import argparse
import math
import resource
import time

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def ternary(w):
    scale = w.detach().abs().mean().clamp_min(1e-5)
    q = (w.detach() / scale).round().clamp(-1, 1) * scale
    return q + (w - w.detach())  # straight through


class Model(torch.nn.Module):
    def __init__(self, a, quantized):
        super().__init__()
        self.a, self.quantized = a, quantized
        hd = a.hidden // a.heads
        kv = a.kv_heads * hd
        std = 0.02

        def p(*shape):
            return torch.nn.Parameter(torch.randn(*shape) * std)

        self.embed = p(a.vocab, a.hidden)
        self.lm_head = p(a.vocab, a.hidden)
        self.final_norm = torch.nn.Parameter(torch.ones(a.hidden))
        self.blocks = torch.nn.ModuleList()
        for _ in range(a.layers):
            b = torch.nn.Module()
            b.q, b.k, b.v, b.o = p(a.hidden, a.hidden), p(kv, a.hidden), p(kv, a.hidden), p(a.hidden, a.hidden)
            b.gate, b.up, b.down = p(a.inter, a.hidden), p(a.inter, a.hidden), p(a.hidden, a.inter)
            b.n1, b.n2 = torch.nn.Parameter(torch.ones(a.hidden)), torch.nn.Parameter(torch.ones(a.hidden))
            self.blocks.append(b)
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2).double() / hd))
        ang = torch.outer(torch.arange(a.seq).double(), inv)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def lin(self, x, w):
        return F.linear(x, ternary(w) if self.quantized else w)

    def rope(self, x):  # x [B, H, T, hd]
        half = x.shape[-1] // 2
        cos, sin = self.cos[: x.shape[2]].to(x.dtype), self.sin[: x.shape[2]].to(x.dtype)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    def forward_from_embeddings(self, h):
        a = self.a
        B, T, D = h.shape
        hd = D // a.heads
        mask = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        for b in self.blocks:
            x = rms_norm(h, b.n1, 1e-5)
            q = self.lin(x, b.q).view(B, T, a.heads, hd).transpose(1, 2)
            k = self.lin(x, b.k).view(B, T, a.kv_heads, hd).transpose(1, 2)
            v = self.lin(x, b.v).view(B, T, a.kv_heads, hd).transpose(1, 2)
            q, k = self.rope(q), self.rope(k)
            rep = a.heads // a.kv_heads
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            p = torch.softmax(s.float().masked_fill(mask, float("-inf")), -1).to(q.dtype)
            o = (p @ v).transpose(1, 2).reshape(B, T, D)
            h = h + self.lin(o, b.o)
            x = rms_norm(h, b.n2, 1e-5)
            h = h + self.lin(F.silu(self.lin(x, b.gate)) * self.lin(x, b.up), b.down)
        return F.linear(rms_norm(h, self.final_norm, 1e-5), self.lm_head)

    def embed_tokens(self, tokens):
        return F.embedding(tokens, self.embed)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in [("vocab", 32000), ("hidden", 768), ("inter", 3072), ("layers", 12), ("heads", 12),
                          ("kv-heads", 12), ("seq", 1024), ("batch", 16), ("steps", 6), ("threads", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--mode", choices=["none", "grad_norm", "grad_match"], default="none")
    ap.add_argument("--estimator", choices=["exact", "finite_diff"], default="exact")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--fd-step", type=float, default=1e-3)
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--profile", default="", help="write the ops of every step as a Chrome trace, "
                    "each step under a 'qat_step' range as qat bench train --profile does")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    dev = torch.device(a.device)
    student, teacher = Model(a, True).to(dev), Model(a, False).to(dev)
    teacher.requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def task_loss(logits, targets, t_logits):
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1))
        lt = torch.log_softmax(t_logits.float().reshape(-1, V), -1)
        ls = torch.log_softmax(logits.float().reshape(-1, V), -1)
        kd = (lt.exp() * (lt - ls)).sum(-1).mean()
        return a.kd_weight * kd + (1 - a.kd_weight) * ce

    def step(tokens):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        B = inputs.shape[0]
        with autocast:
            with torch.no_grad():
                t_logits = teacher.forward_from_embeddings(teacher.embed_tokens(inputs))
            t_grad = None
            if a.mode == "grad_match":
                xt = teacher.embed_tokens(inputs).detach().requires_grad_(True)
                ce_t = F.cross_entropy(teacher.forward_from_embeddings(xt).float().reshape(-1, a.vocab),
                                       targets.reshape(-1))
                t_grad = torch.autograd.grad(ce_t, xt)[0].detach()
            x = student.embed_tokens(inputs)
            logits = student.forward_from_embeddings(x)
            loss = task_loss(logits, targets, t_logits)
            if a.mode == "none":
                loss.backward()
            elif a.estimator == "exact":
                pen_of = F.cross_entropy(logits.float().reshape(-1, a.vocab), targets.reshape(-1)) \
                    if a.mode == "grad_match" else loss
                g = torch.autograd.grad(pen_of, x, retain_graph=True, create_graph=True)[0]
                v = g - t_grad if t_grad is not None else g
                (loss + a.lam * B * v.float().pow(2).sum()).backward()
            else:
                if a.mode == "grad_match":
                    ce = F.cross_entropy(logits.float().reshape(-1, a.vocab), targets.reshape(-1))
                    v = (torch.autograd.grad(ce, x, retain_graph=True)[0] - t_grad).detach()
                    loss.backward()
                else:
                    x.retain_grad()
                    loss.backward()
                    v = x.grad.detach()
                vnorm = v.float().norm().item()
                h = a.fd_step * x.detach().float().norm().item()
                if vnorm > 0:
                    c = 2.0 * a.lam * B * vnorm / h
                    offset = v * (h / vnorm)

                    def perturbed(off):
                        xs = student.embed_tokens(inputs) + off
                        lg = student.forward_from_embeddings(xs)
                        if a.mode == "grad_match":
                            return F.cross_entropy(lg.float().reshape(-1, a.vocab), targets.reshape(-1))
                        return task_loss(lg, targets, t_logits)

                    ((perturbed(offset) - perturbed(-offset)) * (0.5 * c)).backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(2)
    times = []
    profiler = None
    if a.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if dev.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
        profiler.__enter__()
    for i in range(a.steps):
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if profiler is not None:
            with torch.profiler.record_function("qat_step"):
                step(tokens)
        else:
            step(tokens)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        profiler.export_chrome_trace(a.profile)
    steady = times[1:] if len(times) > 1 else times
    s = sum(steady) / len(steady)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(f"ref: steady state over {len(steady)} steps: {a.batch * a.seq / s:.1f} tokens/s, {s:.4f} s/step; "
          f"peak memory {peak:.2f} GB (torch {torch.__version__}, {a.device}, {a.dtype}, {a.mode} {a.estimator})")


if __name__ == "__main__":
    main()
