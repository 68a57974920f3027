#!/usr/bin/env python3
"""Writes one run's results: OUT.json (everything), OUT.md (tables) and OUT.png (chart).

Ratios are computed against nginx and Envoy measured in the same run, never against old runs.
"""
import argparse
import json


def load_lines(path):
    try:
        return [json.loads(line) for line in open(path) if line.strip()]
    except FileNotFoundError:
        return []


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def fmt_ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def build(meta, raw, targets, rss):
    names = [t["target"] for t in targets]
    workloads = list(dict.fromkeys(r["workload"] for r in raw))
    cell = {(r["target"], r["workload"], r["phase"]): r for r in raw}
    rows = []
    for w in workloads:
        base = {b: cell.get((b, w, "max"), {}).get("rps") for b in ("nginx", "envoy")}
        up_p99 = cell.get(("upstream", w, "rate"), {}).get("p99_us")
        for n in names:
            mx, rt = cell.get((n, w, "max"), {}), cell.get((n, w, "rate"), {})
            rows.append({
                "workload": w, "target": n, "max_rps": mx.get("rps"),
                "vs_nginx": ratio(mx.get("rps"), base["nginx"]),
                "vs_envoy": ratio(mx.get("rps"), base["envoy"]),
                "offered_rps": rt.get("offered_rps"), "achieved_rps": rt.get("rps"),
                "p50_us": rt.get("p50_us"), "p99_us": rt.get("p99_us"), "p999_us": rt.get("p999_us"),
                "added_p99_us": (rt["p99_us"] - up_p99) if rt.get("p99_us") and up_p99 and n != "upstream" else None,
                "cpu_s_per_10k_at_rate": rt.get("cpu_s_per_10k"),
                "cpu_s_per_10k_at_max": mx.get("cpu_s_per_10k"),
                "errors": (mx.get("errors") or 0) + (rt.get("errors") or 0),
                "max_lag_us": rt.get("max_lag_us"), "max_tool": mx.get("tool"),
                "unsent": rt.get("unsent"),
                # The target could not keep up with the offered rate: its latency there is queueing.
                "saturated": bool(rt.get("unsent")) or (rt.get("rps") or 0) < 0.95 * (rt.get("offered_rps") or 0),
                "failed": mx.get("failed") or rt.get("failed"),
            })
    return {"meta": meta, "targets": targets, "peak_rss_kb": {r["target"]: r["peak_rss_kb"] for r in rss},
            "rows": rows, "raw": raw}


def markdown(doc):
    m = doc["meta"]
    out = [f"# Load test {m['timestamp']} ({m['mode']})", ""]
    mc = m["machine"]
    out += [f"- Machine: {mc['cpu']}, {mc['cores']} cores, kernel {mc['kernel']}, {mc['os']}",
            f"- Load average (1 min) at start {m['load_average_start']}, at end {m['load_average_end']}"
            + ("  **(> 1.0: other work was running; treat the numbers as noisy)**" if m["load_average_start"] > 1.0 else ""),
            f"- Pinning: proxy under test on core {m['pinning']['proxy_core']} (one worker); load generator "
            f"and upstream on core {m['pinning']['load_and_upstream_core']} (`taskset -c`); all of them at "
            f"nice {m['pinning'].get('nice', 0)} (the machine is shared with other builds)",
            "- Versions: " + ", ".join(f"{k} `{v}`" for k, v in m["versions"].items()),
            f"- Settings: {json.dumps(m['settings'])}",
            "- phigate-full = phigate-pass + the stages landed in main (see configs/phigate-full.yaml); "
            "phigate-traced = phigate-full + OpenTelemetry tracing of every request (OTLP/HTTP to a sink)",
            "- Every proxy: one worker, HTTP/1.1 + mTLS to the upstream, one access-log line per request to a file",
            "", "Token check (a valid token *without* `mfa` in `amr`): " + ", ".join(
                f"{t['target']} → {t['mfa_status']}" for t in doc["targets"]),
            "", "Max throughput: wrk (HTTP/1.1, 32 conns) / h2load (HTTP/2, 8 conns × 8 streams); the bare "
            "upstream with bench-rate closed-loop (same concurrency; wrk/h2load cannot send a client cert). "
            "Latency: bench-rate open loop at half of nginx's max. CPU = proxy process tree, s per 10k requests at the fixed rate.", ""]
    for w in dict.fromkeys(r["workload"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["workload"] == w]
        offered = next((r["offered_rps"] for r in rows if r["offered_rps"]), None)
        out += [f"## {w} (fixed rate {offered:.0f} req/s)" if offered else f"## {w}", "",
                "| target | max req/s | × nginx | × Envoy | p50 ms | p99 ms | p99.9 ms | added p99 ms | CPU s/10k | errors | unsent |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append("| {target} | {mx} | {vn} | {ve} | {p50} | {p99} | {p999} | {add} | {cpu} | {err} | {unsent} |".format(
                target=r["target"] + (" ¹" if r["max_tool"] == "bench-rate-closed" else "")
                + (" (a run failed)" if r["failed"] else ""),
                mx=f"{r['max_rps']:.0f}" if r["max_rps"] else "–",
                vn=r["vs_nginx"] or "–", ve=r["vs_envoy"] or "–", p50=fmt_ms(r["p50_us"]),
                p99=fmt_ms(r["p99_us"]) + (" ²" if r["saturated"] else ""), p999=fmt_ms(r["p999_us"]), add=fmt_ms(r["added_p99_us"]),
                cpu=f"{r['cpu_s_per_10k_at_rate']:.2f}" if r["cpu_s_per_10k_at_rate"] is not None else "–",
                err=r["errors"], unsent=r["unsent"] or 0))
        out.append("")
    out += ["¹ measured with bench-rate in closed loop (wrk/h2load cannot present the client certificate the "
            "upstream requires); a heavier client than wrk, so a lower bound of the upstream's capacity.",
            "² saturated: the target could not sustain the offered rate (achieved < 95 % or requests left unsent); "
            "the latency is queueing. `unsent`: requests the schedule called for but the saturated target could not take "
            "before the run ended (not errors: nothing failed, the target was too slow for the rate).", ""]
    out += ["## Peak RSS (VmHWM, process tree)", "", "| target | MiB |", "|---|---:|"]
    out += [f"| {t} | {kb / 1024:.1f} |" for t, kb in doc["peak_rss_kb"].items()]
    out += ["", "## Issue targets (reported, not tuned for)", ""]
    full = [r for r in doc["rows"] if r["target"] == "phigate-full"]
    for r in full:
        out.append(f"- {r['workload']}: ×nginx {r['vs_nginx']} (goal ≥ 1.0), ×Envoy {r['vs_envoy']} (goal ≥ 1.5), "
                   f"added p99 {fmt_ms(r['added_p99_us'])} ms (goal ≤ 1 ms)")
    total_errors = sum(r["errors"] or 0 for r in doc["rows"])
    out.append(f"- errors (non-2xx + socket) in the whole run: {total_errors} (goal 0); "
               f"unsent because saturated: {sum(r['unsent'] or 0 for r in doc['rows'])}")
    lagged = [f"{r['target']}/{r['workload']}" for r in doc["rows"] if (r["max_lag_us"] or 0) > 5000]
    if lagged:
        out.append(f"- generator fell > 5 ms behind its schedule in: {', '.join(lagged)} (latency there is less trustworthy)")
    return "\n".join(out) + "\n"


def chart(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = list(dict.fromkeys(r["workload"] for r in doc["rows"]))
    targets = [t["target"] for t in doc["targets"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(len(targets), 1)
    for i, t in enumerate(targets):
        xs = [j + i * width for j in range(len(workloads))]
        get = {r["workload"]: r for r in doc["rows"] if r["target"] == t}
        axes[0].bar(xs, [get[w]["max_rps"] or 0 for w in workloads], width, label=t)
        axes[1].bar(xs, [(get[w]["p99_us"] or 0) / 1000 for w in workloads], width, label=t)
    for ax, title in ((axes[0], "max throughput (req/s, higher is better)"),
                      (axes[1], "p99 latency at half nginx's max (ms, log scale, lower is better)")):
        ax.set_title(title, fontsize=10)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))], workloads)
        ax.grid(axis="y", alpha=0.3)
    # Saturated targets reach seconds while the others stay near a millisecond: log scale.
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"phigate load test {doc['meta']['timestamp']} ({doc['meta']['mode']}, "
                 f"{doc['meta']['machine']['cores']} cores, load avg {doc['meta']['load_average_start']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    p = argparse.ArgumentParser()
    for a in ("--meta", "--raw", "--targets", "--rss", "--out"):
        p.add_argument(a, required=True)
    args = p.parse_args()
    doc = build(json.load(open(args.meta)), load_lines(args.raw), load_lines(args.targets), load_lines(args.rss))
    json.dump(doc, open(args.out + ".json", "w"), indent=1)
    open(args.out + ".md", "w").write(markdown(doc))
    if not chart(doc, args.out + ".png"):
        print("matplotlib unavailable: no chart")


if __name__ == "__main__":
    main()
