"""`mnistlab data ...`: fetch, inspect, draw and convert datasets."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from mnistlab.cli.args import check_output_file, non_negative_int, positive_int
from mnistlab.datasets import (
    DATASETS,
    dataset_info,
    fetch_all,
    get_dataset,
    load_data,
    read_csv,
    read_idx,
    verify_cache,
    write_csv,
    write_idx,
)
from mnistlab.datasets.idx import check_images, check_labels
from mnistlab.errors import MnistlabError

SHADES = " ░▒▓█"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command group."""
    data = subparsers.add_parser("data", help="fetch, inspect, draw and convert datasets")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    def dataset_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dataset", default="mnist", choices=sorted(DATASETS), help="(default: mnist)"
        )

    fetch = commands.add_parser("fetch", help="download and verify a dataset into the cache")
    dataset_option(fetch)
    fetch.set_defaults(func=cmd_fetch)

    info = commands.add_parser("info", help="where a dataset was loaded from, counts, checksums")
    dataset_option(info)
    info.set_defaults(func=cmd_info)

    verify = commands.add_parser(
        "verify",
        help="check every byte: each .gz against the registry, each decoded array against "
        "its CRC-32 (damaged ones are decoded again; exit 1 if any was)",
    )
    dataset_option(verify)
    verify.set_defaults(func=cmd_verify)

    show = commands.add_parser("show", help="draw one digit in the terminal with its pixel values")
    show.add_argument("index", type=int, help="image index within the split")
    show.add_argument("--split", choices=["train", "test"], default="train")
    dataset_option(show)
    show.set_defaults(func=cmd_show)

    grid = commands.add_parser("grid", help="save a PNG grid of digits with their labels")
    grid.add_argument(
        "--count", type=positive_int, default=25, help="number of digits (default: 25)"
    )
    grid.add_argument("--split", choices=["train", "test"], default="train")
    grid.add_argument("--start", type=non_negative_int, default=0, help="first index (default: 0)")
    grid.add_argument("--out", required=True, type=Path, help="output PNG file")
    dataset_option(grid)
    grid.set_defaults(func=cmd_grid)

    convert = commands.add_parser(
        "convert",
        help="convert between IDX and CSV",
        description=(
            "Convert IDX <-> CSV. SRC is a CSV file, an IDX images file (.gz or raw), or a "
            "dataset split such as mnist:test. A CSV destination gets label,pixel0..783 rows; "
            "an IDX destination names the images file and the labels go to --labels (by "
            "default the same name with 'images'/'idx3' replaced by 'labels'/'idx1')."
        ),
    )
    convert.add_argument("src")
    convert.add_argument("dst", type=Path)
    convert.add_argument(
        "--labels", type=Path, help="labels IDX file (read for IDX->CSV, written for CSV->IDX)"
    )
    convert.add_argument("--header", action="store_true",
                         help="start the CSV with a label,pixel0,... header row (by default "
                              "none, as the course's mnist_train.csv: np.loadtxt reads it)")
    convert.set_defaults(func=cmd_convert)


def cmd_fetch(args: argparse.Namespace) -> int:
    files = fetch_all(args.dataset)
    for key, verified in files.items():
        print(f"{key:13s} {verified.path}  (from {verified.origin}, checksum ok)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mnistlab.cli.output import console as make_console

    dataset = get_dataset(args.dataset)
    checks = verify_cache(args.dataset)  # first, so that what is counted below is verified
    infos = dataset_info(args.dataset)
    console = make_console()
    console.print(f"[bold]{dataset.name}[/bold]: {dataset.citation}")
    for info in infos:
        console.print(
            f"  {info.filename:28s} {info.count:>7,}  md5 {info.md5}\n"
            f"  {'':28s} from {info.origin}",
            highlight=False,
            soft_wrap=True,
        )
    _print_cache_checks(console, checks)
    table = Table(title="examples per class")
    table.add_column("class")
    labelled = [info for info in infos if info.class_counts is not None]
    for info in labelled:
        table.add_column(info.key.split("_")[0], justify="right")
    for index, name in enumerate(dataset.class_names):
        title = name if name == str(index) else f"{index} {name}"
        table.add_row(title, *(f"{info.class_counts[index]:,}" for info in labelled))
    console.print(table)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from mnistlab.cli.output import console as make_console

    console = make_console()
    for key, verified in fetch_all(args.dataset).items():
        console.print(
            f"  {key:13s} {verified.path}: MD5 of the decompressed content ok",
            highlight=False,
            soft_wrap=True,
        )
    checks = verify_cache(args.dataset)
    _print_cache_checks(console, checks)
    return 1 if any(check.status == "rebuilt" for check in checks) else 0


def _print_cache_checks(console, checks) -> None:
    """One line when every decoded array checked out, else one line per damaged array."""
    fine = [check for check in checks if check.status != "rebuilt"]
    console.print(
        f"  decoded cache: {len(fine)} of {len(checks)} arrays verified byte for byte "
        "(CRC-32 against their records)",
        highlight=False,
    )
    for check in checks:
        if check.status == "rebuilt":
            console.print(
                f"  decoded cache: {Path(check.path).name}: {check.problem}; "
                "decoded again from the verified .gz",
                style="yellow",
                highlight=False,
                soft_wrap=True,
            )


def cmd_show(args: argparse.Namespace) -> int:
    images, labels = _split(args.dataset, args.split)
    if not 0 <= args.index < len(images):
        raise MnistlabError(
            f"index {args.index} is outside 0..{len(images) - 1} of the {args.split} split"
        )
    image = np.asarray(images[args.index])
    label = int(labels[args.index])
    name = get_dataset(args.dataset).class_names[label]
    print(
        f"{args.dataset} {args.split}[{args.index}]  label: {label}"
        + (f" ({name})" if name != str(label) else "")
    )
    print(render_digit(image))
    print()
    print(format_pixels(image))
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from mnistlab.reporting.plots import digit_grid

    check_output_file(args.out, "--out")
    images, labels = _split(args.dataset, args.split)
    stop = min(args.start + args.count, len(images))
    if args.count < 1 or args.start < 0 or args.start >= len(images):
        raise MnistlabError(
            f"--start {args.start}: expected an index from 0 to {len(images) - 1} "
            f"of the {args.split} split"
        )
    names = get_dataset(args.dataset).class_names
    shown = [names[int(t)] for t in labels[args.start : stop]]
    digit_grid(
        images[args.start : stop],
        shown,
        args.out,
        count=stop - args.start,
        title=f"{args.dataset} {args.split} [{args.start}:{stop}]",
    )
    print(f"wrote {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    check_output_file(args.dst, "DST")
    images, labels = _read_any(args.src, args.labels)
    if _is_csv(str(args.dst)):
        write_csv(args.dst, images, labels, header=args.header)
        print(f"wrote {args.dst} ({len(images):,} rows)")
    else:
        labels_path = args.labels or _labels_name(args.dst)
        check_output_file(labels_path, "--labels")
        write_idx(args.dst, images)
        write_idx(labels_path, labels)
        print(f"wrote {args.dst} and {labels_path} ({len(images):,} images)")
    return 0


def render_digit(image: np.ndarray) -> str:
    """A 28x28 image as text, two characters a pixel, darker shades for more ink."""
    levels = np.minimum(image.astype(np.int32) * len(SHADES) // 256, len(SHADES) - 1)
    return "\n".join("".join(SHADES[level] * 2 for level in row) for row in levels)


def format_pixels(image: np.ndarray) -> str:
    """The pixel values in aligned columns, one image row a line."""
    return "\n".join(" ".join(f"{int(v):3d}" for v in row) for row in image)


def _split(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    train, test = load_data(dataset)
    return train if split == "train" else test


def _is_csv(name: str) -> bool:
    return name.endswith((".csv", ".csv.gz"))


def _labels_name(images_path: Path) -> Path:
    name = images_path.name
    if "images" not in name:
        raise MnistlabError(
            f"cannot derive a labels file name from {images_path} "
            "(its name has no 'images' in it): pass --labels"
        )
    return images_path.with_name(name.replace("images", "labels").replace("idx3", "idx1"))


def _read_any(src: str, labels_path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    split = re.fullmatch(r"([a-z-]+):(train|test)", src)
    if split and split.group(1) in DATASETS:
        return _split(split.group(1), split.group(2))
    if _is_csv(src):
        return read_csv(src)
    images = check_images(read_idx(src), src)
    labels_file = labels_path or _labels_name(Path(src))
    labels = check_labels(read_idx(labels_file), str(labels_file))
    if len(labels) != len(images):
        raise MnistlabError(
            f"{src} has {len(images)} images but {labels_file} has {len(labels)} labels"
        )
    return images, labels
