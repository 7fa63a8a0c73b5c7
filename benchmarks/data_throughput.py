"""Training-input throughput, side by side on the same .rec and the same cores.

Pipelines (all: random-resized crop, flip, colour jitter 0.4, PCA lighting 0.1, normalise):
  ours_recorditer  resnest_gluon.data.RecordTrainIter (mx.io.ImageRecordIter, the default training path)
  ours_loader      resnest_gluon.data.RecordTrainLoader (Gluon DataLoader, OpenCV/numpy transforms)
  official         the official ResNeSt gluon train script's input: ImageRecordDataset + gluon transforms
                   (RandomResizedCrop, RandomFlipLeftRight, RandomColorJitter, RandomLighting, ToTensor,
                   Normalize) in a DataLoader
Each measurement runs in its own process pinned to the first N cores (``--cores 1,2``), with N decoding
threads/workers and OMP_NUM_THREADS=1. Prints a table and ratios; writes JSON and a PNG bar chart.

    python -m benchmarks.data_throughput --make-data 1000 --cores 1,2 --out out/data_throughput
"""
import argparse
import json
import os
import subprocess
import time

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.data_throughput
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

from ._launch import module_command, module_env  # noqa: E402

PIPELINES = ("ours_recorditer", "ours_loader", "official")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_data(prefix, n, min_side=300, max_side=500, seed=0, quality=90):
    """``n`` JPEG records of ImageNet-like sizes (smooth random content), labels 0..999."""
    import cv2
    import mxnet as mx
    import numpy as np

    rng = np.random.RandomState(seed)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i in range(n):
        h, w = rng.randint(min_side, max_side + 1, 2)
        coarse = rng.randint(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(img, rng.randint(0, 20, img.shape).astype(np.uint8))
        header = mx.recordio.IRHeader(0, float(i % 1000), i, 0)
        writer.write_idx(i, mx.recordio.pack_img(header, img, quality=quality, img_fmt=".jpg"))
    writer.close()
    return prefix + ".rec", prefix + ".idx"


def _official_loader(rec, input_size, batch_size, workers):
    import mxnet as mx
    from mxnet.gluon.data.vision import ImageRecordDataset, transforms

    jitter, lighting = 0.4, 0.1
    transform_train = transforms.Compose([
        transforms.RandomResizedCrop(input_size),
        transforms.RandomFlipLeftRight(),
        transforms.RandomColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        transforms.RandomLighting(lighting),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    return mx.gluon.data.DataLoader(ImageRecordDataset(rec).transform_first(transform_train),
                                    batch_size=batch_size, shuffle=True, last_batch="discard", num_workers=workers)


def _build(pipeline, rec, idx, input_size, batch_size, cores):
    from resnest_gluon.data import RecordTrainIter, RecordTrainLoader

    if pipeline == "ours_recorditer":
        return RecordTrainIter(rec, idx, batch_size=batch_size, data_shape=input_size, num_workers=cores)
    if pipeline == "ours_loader":
        return RecordTrainLoader(rec, idx, batch_size=batch_size, input_size=input_size, num_workers=cores)
    if pipeline == "official":
        return _official_loader(rec, input_size, batch_size, cores)
    raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")


def measure(pipeline, rec, idx, input_size, batch_size, cores, batches, warmup):
    """Images/s over ``batches`` batches after ``warmup`` batches (epochs restart as needed)."""
    loader = _build(pipeline, rec, idx, input_size, batch_size, cores)

    def stream():
        while True:
            for data, _ in loader:
                yield data

    it = stream()
    for _ in range(warmup):
        next(it).wait_to_read()
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        data = next(it)
        data.wait_to_read()
        images += data.shape[0]
    seconds = time.perf_counter() - start
    return {"pipeline": pipeline, "cores": cores, "images": images, "seconds": round(seconds, 4),
            "images_per_s": round(images / seconds, 2), "images_per_s_per_core": round(images / seconds / cores, 2),
            "shape": list(data.shape), "dtype": str(data.dtype.__name__ if hasattr(data.dtype, "__name__")
                                                    else data.dtype)}


def _child(args):
    os.sched_setaffinity(0, list(range(args.cores_one)))
    result = measure(args.pipeline, args.rec, args.idx, args.input_size, args.batch_size, args.cores_one,
                     args.batches, args.warmup)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(args, pipeline, cores):
    cmd = module_command("data_throughput") + [
        "--child", "--pipeline", pipeline, "--cores-one", str(cores), "--rec", args.rec, "--idx", args.idx,
        "--input-size", str(args.input_size), "--batch-size", str(args.batch_size), "--batches", str(args.batches),
        "--warmup", str(args.warmup)]
    env = module_env(dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1", OPENCV_NUM_THREADS="1"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{pipeline} on {cores} cores failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def _chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = sorted({r["cores"] for r in report["results"]})
    pipes = [p for p in PIPELINES if any(r["pipeline"] == p for r in report["results"])]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(pipes)
    for k, p in enumerate(pipes):
        vals = [next((r["images_per_s"] for r in report["results"] if r["pipeline"] == p and r["cores"] == c), 0)
                for c in cores]
        ax.bar([i + k * width for i in range(len(cores))], vals, width, label=p)
    ax.set_xticks([i + width * (len(pipes) - 1) / 2 for i in range(len(cores))])
    ax.set_xticklabels([f"{c} core{'s' if c > 1 else ''}" for c in cores])
    ax.set_ylabel("images / s")
    ax.set_title(f"training input, {report['config']['input_size']} px, batch {report['config']['batch_size']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rec", help="training .rec (its .idx next to it or --idx); see --make-data")
    ap.add_argument("--idx")
    ap.add_argument("--make-data", type=int, metavar="N", help="generate N synthetic JPEG records if no --rec")
    ap.add_argument("--data-dir", default="out/data_throughput/data", help="where --make-data writes")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cores", default="1,2", help="comma-separated core counts, e.g. 1,2,4")
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default="out/data_throughput", help="folder for data_throughput.json/.png")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)
    ap.add_argument("--cores-one", type=int, help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    if not args.rec:
        if not args.make_data:
            ap.error("give --rec PATH or --make-data N")
        args.rec, args.idx = make_data(os.path.join(args.data_dir, f"synthetic{args.make_data}"), args.make_data)
    args.idx = args.idx or os.path.splitext(args.rec)[0] + ".idx"
    for path in (args.rec, args.idx):
        if not os.path.isfile(path):
            ap.error(f"file not found: {path}")
    cores = [int(c) for c in args.cores.split(",")]
    avail = len(os.sched_getaffinity(0))
    if max(cores) > avail:
        ap.error(f"--cores {args.cores}: only {avail} cores available")
    pipelines = args.pipelines.split(",")
    for p in pipelines:
        if p not in PIPELINES:
            ap.error(f"unknown pipeline {p!r}; known: {', '.join(PIPELINES)}")
    results = [_run_child(args, p, c) for c in cores for p in pipelines]
    ratios = {}
    for c in cores:
        by = {r["pipeline"]: r["images_per_s"] for r in results if r["cores"] == c}
        if "official" in by:
            ratios[str(c)] = {f"{p}/official": round(by[p] / by["official"], 2) for p in by if p != "official"}
    report = {"config": {"rec": args.rec, "input_size": args.input_size, "batch_size": args.batch_size,
                         "batches": args.batches, "warmup": args.warmup, "cores": cores, "pipelines": pipelines},
              "results": results, "ratios": ratios,
              "goal_2x_default_vs_official": {c: v.get("ours_recorditer/official", 0) >= 2 for c, v in ratios.items()}}
    print(f"{'pipeline':<18}{'cores':>6}{'images/s':>12}{'per core':>12}")
    for r in results:
        print(f"{r['pipeline']:<18}{r['cores']:>6}{r['images_per_s']:>12.1f}{r['images_per_s_per_core']:>12.1f}")
    for c, v in ratios.items():
        print(f"{c} core(s): " + ", ".join(f"{k} = {x:.2f}x" for k, x in v.items()))
    os.makedirs(args.out, exist_ok=True)
    from resnest_gluon.atomic import write_json  # after the per-measurement processes: keeps this one light

    write_json(os.path.join(args.out, "data_throughput.json"), report)
    _chart(report, os.path.join(args.out, "data_throughput.png"))
    print(f"wrote {os.path.join(args.out, 'data_throughput.json')} and .png")
    return report


if __name__ == "__main__":
    main()
