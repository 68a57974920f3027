#!/usr/bin/env python3
"""Turns one load generator output into one JSON line (load-tests/run calls it after each run).

  parse.py max  wrk|h2load|bench-rate-closed FILE --target T --workload W --cpu-ticks N --ticks-per-sec HZ
  parse.py rate bench-rate FILE ... --secs S --warmup-secs S
  parse.py half-rate RAW.jsonl --workload W      (prints the fixed offered rate for W)

Errors are non-2xx responses plus socket errors (connect, read, write, timeouts).
"""
import argparse
import json
import re
import sys


def parse_wrk(text):
    m = re.search(r"BENCH_SUMMARY requests=(\d+) duration_us=(\d+) non2xx=(\d+) connect=(\d+) "
                  r"read=(\d+) write=(\d+) timeout=(\d+)", text)
    if not m:
        raise ValueError(f"no wrk summary in output:\n{text[-2000:]}")
    req, dur, non2xx, *sock = map(int, m.groups())
    return {"requests": req, "rps": req / (dur / 1e6), "errors_status": non2xx,
            "errors_socket": sum(sock)}


def parse_h2load(text):
    fin = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (fin and req and codes):
        raise ValueError(f"unexpected h2load output:\n{text[-2000:]}")
    total, started, done, ok, failed, errored, timeout = map(int, req.groups())
    c2, c3, c4, c5 = map(int, codes.groups())
    return {"requests": done, "rps": float(fin.group(2)), "errors_status": c3 + c4 + c5,
            "errors_socket": max(failed - (c3 + c4 + c5), 0) + errored + timeout}


def parse_bench_rate(text):
    if not text.strip():
        raise ValueError("bench-rate printed nothing")
    r = json.loads(text.strip().splitlines()[-1])
    out = {"requests": r["requests"], "rps": r["achieved_rps"], "errors_status": r["errors_status"],
           "errors_socket": r["errors_socket"]}
    for k in ("offered_rps", "p50_us", "p99_us", "p999_us", "max_us", "mean_us", "max_lag_us", "unsent"):
        out[k] = r[k]
    return out


def record(args):
    text = open(args.file).read()
    try:
        parsed = {"wrk": parse_wrk, "h2load": parse_h2load}.get(args.tool, parse_bench_rate)(text)
    except (ValueError, SystemExit, KeyError) as e:
        # A failed measurement is a result too (shown as failed), not a reason to lose the run.
        print(json.dumps({"target": args.target, "workload": args.workload, "phase": args.phase,
                          "tool": args.tool, "failed": str(e)[:300], "rps": None, "requests": 0,
                          "errors": None, "cpu_s_per_10k": None}))
        return
    cpu_s = args.cpu_ticks / args.ticks_per_sec
    # CPU covers the whole run; bench-rate counts requests after warm-up only, so scale up.
    sent = parsed["requests"]
    if args.secs and args.secs > args.warmup_secs:
        sent = parsed["requests"] * args.secs / (args.secs - args.warmup_secs)
    parsed.update({"target": args.target, "workload": args.workload, "phase": args.phase,
                   "tool": args.tool, "cpu_s": cpu_s,
                   "cpu_s_per_10k": cpu_s / sent * 10_000 if sent else None,
                   "errors": parsed["errors_status"] + parsed["errors_socket"]})
    print(json.dumps(parsed))


def half_rate(args):
    rows = [json.loads(line) for line in open(args.file) if line.strip()]
    by_target = {r["target"]: r for r in rows if r["phase"] == "max" and r["workload"] == args.workload}
    for name in ("nginx", "phigate-pass", *by_target):
        if by_target.get(name, {}).get("rps"):
            print(max(int(by_target[name]["rps"] / 2), 1))
            return
    print(1000)  # nothing measured: an arbitrary low rate, flagged by the failed max runs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["max", "rate", "half-rate"])
    p.add_argument("tool_or_file")
    p.add_argument("file", nargs="?")
    p.add_argument("--target")
    p.add_argument("--workload", required=True)
    p.add_argument("--cpu-ticks", type=int, default=0)
    p.add_argument("--ticks-per-sec", type=int, default=100)
    p.add_argument("--secs", type=float, default=0)
    p.add_argument("--warmup-secs", type=float, default=0)
    args = p.parse_args()
    if args.phase == "half-rate":
        args.file = args.tool_or_file
        half_rate(args)
    else:
        args.tool = args.tool_or_file
        record(args)


if __name__ == "__main__":
    sys.exit(main())
