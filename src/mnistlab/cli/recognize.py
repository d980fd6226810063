"""`mnistlab predict` and `mnistlab serve`: recognize a person's own handwriting."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistlab.cli.args import about, check_output_dir, int_range, port
from mnistlab.cli.profiles import DB_HELP
from mnistlab.errors import MnistlabError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` and `serve` commands."""
    predict = subparsers.add_parser(
        "predict",
        help="recognize the digit in image files",
        description="Recognize one handwritten digit per image (PNG, JPEG, ... any size). "
        "Each image is preprocessed the way MNIST was made (see mnistlab.handwriting.preprocess).",
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--model", type=Path, help="saved model (default: the bundled one)")
    predict.add_argument(
        "--top",
        type=int_range(1, 10),
        default=3,
        metavar="K",
        help="show the K most likely, 1 to 10 (default: 3)",
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    predict.add_argument(
        "--save-preprocessed",
        type=Path,
        metavar="DIR",
        help="also save the 28x28 image the model saw, as DIR/<name>.png",
    )
    predict.add_argument(
        "--profile",
        default="default",
        metavar="NAME",
        help="read with what this profile was taught (`mnistlab teach`); default: default, "
        "which reads as the model alone until something is taught to it",
    )
    predict.add_argument(
        "--no-profile", action="store_true", help="read with the model alone, no profile"
    )
    predict.add_argument("--db", type=Path, metavar="PATH", help=DB_HELP)
    predict.set_defaults(func=cmd_predict)

    serve = subparsers.add_parser(
        "serve",
        help="draw-a-digit page and JSON API",
        description="Serve a page to draw digits on and a JSON API (POST /api/predict, "
        "POST /api/teach, GET /api/health, docs at /docs). Needs the serve extra.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port, default=8000, help="(default: 8000)")
    serve.add_argument("--model", type=Path, help="saved model (default: the bundled one)")
    serve.add_argument(
        "--db", type=Path, metavar="PATH",
        help="profiles database, made when the page first teaches "
        "(default: $MNISTLAB_HOME/profiles.sqlite)",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)


def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from mnistlab.cli import one_line
    from mnistlab.handwriting.preprocess import preprocess_image
    from mnistlab.handwriting.recognizer import Recognizer

    if args.save_preprocessed is not None:
        check_output_dir(args.save_preprocessed, "--save-preprocessed")
    with about("--model" if args.model else None):
        recognizer = Recognizer.from_path(args.model)
    read = _profile_reader(recognizer, args)
    failures = 0
    for path in args.images:
        try:
            prediction = read(preprocess_image(load_digit_image(path), name=str(path)))
        except MnistlabError as error:  # one line on stderr per image that failed; go on
            failures += 1
            message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
            if args.json:
                print(json.dumps({"file": str(path), "error": message}))
            print(f"mnistlab: error: IMAGE {one_line(message)}", file=sys.stderr)
            continue
        if args.save_preprocessed:
            args.save_preprocessed.mkdir(parents=True, exist_ok=True)
            Image.fromarray(prediction.image).save(args.save_preprocessed / f"{path.stem}.png")
        if args.json:
            record = prediction.to_json(top_k=args.top)
            del record["image"]
            profile = {} if args.no_profile else {"profile": args.profile}
            print(json.dumps({"file": str(path), **record, **profile}))
        else:
            top = "  ".join(f"{d}: {p:6.1%}" for d, p in prediction.top(args.top))
            print(f"{path}: {prediction.digit}   ({top})")
    return 1 if failures else 0


def _profile_reader(recognizer: Any, args: argparse.Namespace) -> Callable[[Any], Any]:
    """What reads a preprocessed digit: the model alone (--no-profile, or a profile with
    nothing taught: exactly the model) or the model with the profile's memory. Checks the
    profile first, so an unknown name is one error before any image is read."""
    if args.no_profile:
        return recognizer.recognize_pixels
    from mnistlab.handwriting.adapt import PersonalRecognizer
    from mnistlab.handwriting.profiles import ProfileStore, check_name

    check_name(args.profile, "--profile")
    personal = PersonalRecognizer(recognizer, ProfileStore(args.db, create=False))
    if not len(personal.memory(args.profile)):
        return recognizer.recognize_pixels
    return lambda pixels: personal.recognize_pixels(pixels, args.profile)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401  (the serve extra is installed)

        from mnistlab.serve.app import create_app, run_server
    except ImportError as error:
        raise MnistlabError(
            f"serving needs the serve extra ({error.name} is missing): "
            "pip install 'mnistlab[serve]'"
        ) from error
    check_address(args.host, args.port)
    with about("--model" if args.model else None):
        app = create_app(args.model, profiles_db=args.db)
    print(f"mnistlab: draw a digit at http://{args.host}:{args.port}/  (API docs at /docs)")
    run_server(app, host=args.host, port=args.port)  # uvicorn with the limits of serve.limits
    return 0


def check_address(host: str, port: int) -> None:
    """--host and --port: a name that resolves and an address free to listen on (checked
    here so that a taken port is one line, not the server's own log and exit status 3)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise MnistlabError(f"--host {host}: cannot be resolved ({error})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as error:
            raise MnistlabError(
                f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error})"
            ) from None


def load_digit_image(path: Path) -> Any:
    """An image file, decoded at the working size (as `predict` and `teach` read one)."""
    from mnistlab.handwriting.preprocess import WORK_MAX_SIDE, load_image

    return load_image(path, max_side=WORK_MAX_SIDE)
