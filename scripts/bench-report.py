#!/usr/bin/env python3
"""Turns scripts/bench.sh's results.tsv into the markdown table and its JSON twin.

usage: bench-report.py RESULTS.tsv OUT.md OUT.json MACHINE DATE MODE PARAMS ELAPSED_S

results.tsv lines (tab separated):
  row  KEY CASE LABEL PEER UNIT BYTES TARGET_KIND TARGET_VALUE TARGET_TEXT
  val  KEY SIDE samples          (ns for units s, ms and MB/s; plain numbers otherwise)
  na   KEY SIDE reason
  note KEY text
Exits 3 when a row has no value and no reason for a side: the script missed a case.
"""
import json
import statistics
import sys


def human_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt(value, unit):
    if value is None:
        return None
    if unit == "s":
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "ms":
        return f"{value:.3g} ms"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "bytes":
        return human_bytes(value)
    return f"{value:g} {unit}"


def value_of(samples, unit, nbytes):
    """The displayed value from the median sample, in the row's unit."""
    med = statistics.median(samples)
    if unit == "s":
        return med / 1e9
    if unit == "ms":
        return med / 1e6
    if unit == "MB/s":
        if nbytes <= 0:
            raise SystemExit("bench-report: MB/s row without a byte count")
        return nbytes / (med / 1e9) / 1e6
    return med


def main():
    results, out_md, out_json, machine, date, mode, params, elapsed = sys.argv[1:9]
    rows, order = {}, []
    for line in open(results, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        kind, key = f[0], f[1]
        if kind == "row":
            _, key, case, label, peer, unit, nbytes, tkind, tval, ttext = f
            rows[key] = dict(key=key, case=case, what=label, peer=peer, unit=unit,
                             bytes=int(nbytes), target_kind=tkind,
                             target_value=float(tval) if tval else None,
                             target=ttext, sides={}, notes=[])
            order.append(key)
        elif kind == "val":
            samples = [float(x) for x in f[3].split()] if len(f) > 3 else []
            if samples:  # an empty val means "not measured"; an na line says why
                rows[key]["sides"][f[2]] = {"samples": samples}
        elif kind == "na":
            rows[key]["sides"].setdefault(f[2], {"na": f[3]})
        elif kind == "note":
            rows[key]["notes"].append(f[2])

    missing = []
    table = []
    for key in order:
        r = rows[key]
        cells = {}
        for side in ("imagefs", "peer"):
            s = r["sides"].get(side)
            if s is None:
                if side == "peer" and not r["peer"]:
                    s = {"na": "no peer"}
                else:
                    missing.append(f"{key} ({side})")
                    s = {"na": "NOT MEASURED (script bug)"}
                r["sides"][side] = s
            if "samples" in s:
                s["median"] = value_of(s["samples"], r["unit"], r["bytes"])
                cells[side] = fmt(s["median"], r["unit"])
            else:
                cells[side] = s["na"]
        im = r["sides"]["imagefs"].get("median")
        pe = r["sides"]["peer"].get("median")
        ratio = im / pe if im is not None and pe not in (None, 0) else None
        r["ratio"] = ratio
        tk, tv = r["target_kind"], r["target_value"]
        met = None
        if tk == "none":
            met = "—"
        elif tk in ("ratio_le", "ratio_ge"):
            if ratio is not None:
                met = (ratio <= tv) if tk == "ratio_le" else (ratio >= tv)
        elif tk == "imagefs_le":
            if im is not None:
                met = im <= tv
        elif tk == "imagefs_eq":
            s = r["sides"]["imagefs"]
            if "samples" in s:
                met = max(s["samples"]) == tv
        if met is True:
            met = "yes"
        elif met is False:
            met = "**NO**"
        elif met is None:
            met = "n/a"
        r["met"] = met
        table.append(r)
        r["cells"] = cells

    md = []
    md.append("# imagefs benchmarks\n")
    md.append(f"- date: {date}")
    md.append(f"- mode: {mode}")
    md.append(f"- machine: {machine}")
    md.append(f"- {params}")
    md.append(f"- script wall time: {elapsed} s\n")
    md.append("Medians. Ratio = imagefs / peer, of the value shown (times: lower is better for imagefs; "
              "MB/s: higher is better).\n")
    md.append("| case | what | imagefs | peer | ratio (imagefs/peer) | target | met? |")
    md.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        peer = r["cells"]["peer"]
        if r["peer"]:
            peer = f"{peer} ({r['peer']})"
        ratio = "—"
        if r["ratio"] is not None:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] >= 0.1 else f"{r['ratio']:.3g}"
        cell = lambda t: t.replace("|", "\\|")
        md.append(f"| {r['case']} | {cell(r['what'])} | {cell(r['cells']['imagefs'])} | {cell(peer)} | "
                  f"{ratio} | {cell(r['target'] or '—')} | {r['met']} |")
    notes = [(r["key"], n) for r in table for n in r["notes"]]
    if notes:
        md.append("\nNotes:\n")
        for key, n in notes:
            md.append(f"- `{key}`: {n}")
    if missing:
        md.append("\nNOT MEASURED (script bug): " + ", ".join(missing))
    open(out_md, "w", encoding="utf-8").write("\n".join(md) + "\n")

    doc = dict(date=date, mode=mode, machine=machine, params=params, elapsed_s=int(elapsed), rows=[])
    for r in table:
        doc["rows"].append(dict(
            key=r["key"], case=r["case"], what=r["what"], unit=r["unit"],
            samples_unit="ns" if r["unit"] in ("s", "ms", "MB/s") else r["unit"],
            imagefs=r["sides"]["imagefs"], peer_name=r["peer"], peer=r["sides"]["peer"],
            ratio=r["ratio"], target=r["target"], target_kind=r["target_kind"],
            target_value=r["target_value"], met=r["met"].strip("*"), notes=r["notes"]))
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    if missing:
        print("bench-report: not measured: " + ", ".join(missing), file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
