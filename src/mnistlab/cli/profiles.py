"""`mnistlab teach` and `mnistlab profiles`: corrections that stick, per person.

`teach IMAGE... --label D` stores each image (as the model sees it, after preprocessing)
under a profile and prints what the model now answers; `predict --profile NAME` reads with
it (see ``mnistlab.handwriting.adapt`` for how). `profiles` lists, shows, forgets, exports
and imports them. Every command takes ``--db PATH`` (default:
``$MNISTLAB_HOME/profiles.sqlite``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mnistlab.cli.args import about, check_output_file

DB_HELP = "profiles database (default: $MNISTLAB_HOME/profiles.sqlite)"


def add_profile_options(parser: argparse.ArgumentParser, *, reading: bool) -> None:
    """--profile and --db, as every command that reads or teaches takes them."""
    what = "read with" if reading else "teach"
    parser.add_argument(
        "--profile",
        default="default",
        metavar="NAME",
        help=f"the profile to {what}: 1-64 letters, digits, _ . - (default: default)",
    )
    parser.add_argument("--db", type=Path, metavar="PATH", help=DB_HELP)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `teach` and `profiles` commands."""
    teach = subparsers.add_parser(
        "teach",
        help="teach it your handwriting: store digits it should read as LABEL",
        description="Store each image (preprocessed as `predict` does) as an example of "
        "--label in a profile, then print what the model now reads. From then on `predict "
        "--profile NAME` (and the server's pages and API with that profile) read digits "
        "like these as LABEL. Nothing is stored when any image cannot be read.",
    )
    teach.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    teach.add_argument("--label", required=True, metavar="D", help="the digit 0..9 they are")
    add_profile_options(teach, reading=False)
    teach.add_argument("--model", type=Path, help="saved model (default: the bundled one)")
    teach.add_argument("--json", action="store_true", help="one JSON object per image")
    teach.set_defaults(func=cmd_teach)

    profiles = subparsers.add_parser(
        "profiles",
        help="list, show, forget, export or import taught profiles",
        description="Manage the profiles `mnistlab teach` fills.",
    )
    actions = profiles.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every profile and its examples per digit")
    show = actions.add_parser("show", help="one profile: examples per digit, dates")
    show.add_argument("name", metavar="NAME")
    forget = actions.add_parser("forget", help="delete a profile and all its examples")
    forget.add_argument("name", metavar="NAME")
    export = actions.add_parser("export", help="write a profile to a safetensors file")
    export.add_argument("name", metavar="NAME")
    export.add_argument("file", type=Path, metavar="FILE")
    imported = actions.add_parser(
        "import", help="read a profile from an exported file (under its own name or --as)"
    )
    imported.add_argument("file", type=Path, metavar="FILE")
    imported.add_argument("--as", dest="name", metavar="NAME", help="import under this name")
    imported.add_argument(
        "--replace", action="store_true", help="replace an existing profile of that name"
    )
    for action in (listing, show, forget, export, imported):
        action.add_argument("--db", type=Path, metavar="PATH", help=DB_HELP)
        action.set_defaults(func=cmd_profiles)


def cmd_teach(args: argparse.Namespace) -> int:
    import numpy as np

    from mnistlab.cli.recognize import load_digit_image
    from mnistlab.errors import MnistlabError
    from mnistlab.handwriting.adapt import PersonalRecognizer
    from mnistlab.handwriting.preprocess import preprocess_image
    from mnistlab.handwriting.profiles import ProfileStore, check_label, check_name
    from mnistlab.handwriting.recognizer import Recognizer

    label = check_label(args.label, "--label")
    check_name(args.profile, "--profile")
    with about("--model" if args.model else None):
        recognizer = Recognizer.from_path(args.model)
    images = []
    for path in args.images:  # all read before anything is stored
        try:
            images.append(preprocess_image(load_digit_image(path), name=str(path)))
        except MnistlabError as error:
            message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
            raise MnistlabError(f"IMAGE {message} (nothing was taught)") from error
    personal = PersonalRecognizer(recognizer, ProfileStore(args.db))
    answers = personal.teach(np.stack(images), [label] * len(images), args.profile)
    count = personal.store.info(args.profile).examples
    for path, answer in zip(args.images, answers, strict=True):
        if args.json:
            record = answer.to_json(top_k=3)
            del record["image"]
            print(json.dumps({"file": str(path), "taught": label, "profile": args.profile,
                              "examples": count, **record}))  # fmt: skip
        else:
            top = "  ".join(f"{d}: {p:6.1%}" for d, p in answer.top(3))
            print(f"{path}: taught {label}; now reads {answer.digit}   ({top})")
    if not args.json:
        print(f"profile {args.profile}: {_count(count)} in {personal.store.path}")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from mnistlab.handwriting.profiles import ProfileStore

    store = ProfileStore(args.db, create=args.action == "import")
    if args.action == "list":
        found = store.list()
        if not found:
            print(f"no profiles in {store.path} (`mnistlab teach IMAGE --label D` makes one)")
        for info in found:
            print(f"{info.name}: {_count(info.examples)}  ({_per_digit(info.per_digit)})"
                  f"  updated {_when(info.updated)}")  # fmt: skip
    elif args.action == "show":
        info = store.info(args.name)
        print(f"profile {info.name}: {_count(info.examples)} in {store.path}")
        print(f"  per digit: {_per_digit(info.per_digit)}")
        print(f"  created {_when(info.created)}, updated {_when(info.updated)}")
    elif args.action == "forget":
        count = store.forget(args.name)
        print(f"forgot profile {args.name} ({_count(count)})")
    elif args.action == "export":
        check_output_file(args.file, "FILE")
        info = store.export(args.name, args.file)
        print(f"exported profile {info.name} ({_count(info.examples)}) to {args.file}")
    else:
        with about("FILE"):
            info = store.import_file(args.file, args.name, replace=args.replace)
        print(f"imported profile {info.name} ({_count(info.examples)}) from {args.file}")
    return 0


def _count(n: int) -> str:
    return f"{n} example" if n == 1 else f"{n} examples"


def _per_digit(counts: tuple[int, ...]) -> str:
    shown = [f"{d}: {n}" for d, n in enumerate(counts) if n]
    return ", ".join(shown) or "none"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
