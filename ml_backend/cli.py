"""``python -m ml_backend``: serve with gunicorn (threads) on $HOST:$PORT (default 0.0.0.0:9090)."""

from __future__ import annotations

import argparse
import sys

from ml_backend.errors import BadRequest, ConfigError


def _webhook_header(project: str) -> int:
    from ml_backend.service.projects import project_key
    from ml_backend.service.security import HEADER, WebhookSecrets
    from ml_backend.service.settings import Settings
    from ml_backend.service.store import Store

    try:
        settings = Settings.from_env()
        key = project_key(project)
    except (ConfigError, BadRequest) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{HEADER}: {WebhookSecrets(Store(settings.model_dir), settings.webhook_secret).for_project(key)}")
    return 0


WIDTH = 100  # --list fits a terminal (tests/unit/test_cli_list.py)


def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    """``first`` (padded to ``indent``) then ``text``, wrapped to WIDTH with a hanging indent."""
    import textwrap

    head = f"  {first:<{indent - 2}}" if first else " " * indent
    if first and len(head) > indent:  # a long name: the text starts on the next line
        return [head.rstrip(), *_wrap(text, indent)]
    return textwrap.wrap(text, WIDTH, initial_indent=head, subsequent_indent=" " * indent, break_on_hyphens=False)


def _natural(name: str) -> list:
    """resnet18 before resnet101."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _backbone_lines(verbose: bool) -> list[str]:
    from ml_backend.core.architectures import describe_backbones, strategies_refused_by_family

    lines = ["backbones by family (BACKBONE=name; FREEZE moves the frozen boundary; docs/backbones.md):"]
    notes: dict[str, int] = {}  # a reason -> its note number: each long reason is printed once
    for row in describe_backbones():
        lines += _wrap(", ".join(sorted(row["architectures"], key=_natural)), 22, row["family"])
        if row["refused"]:
            lines += _wrap(f"refused: {row['refused']}", 22)
            continue
        refused = strategies_refused_by_family(row["family"])
        if verbose:
            can = ", ".join(f"{name} ({reason})" for name, reason in refused.items())
        else:
            # "needs layer role A2: <why>": one note per <why>, whichever role it is about
            why = {name: reason.partition(": ")[2] or reason for name, reason in refused.items()}
            can = ", ".join(f"{name} [{notes.setdefault(text, len(notes) + 1)}]" for name, text in why.items())
        size = f"; input fixed at {row['fixed_size']} px" if row["fixed_size"] else ""
        lines += _wrap(("every strategy except " + can if refused else "every strategy") + size, 22)
    if notes:
        lines.append("  why a strategy cannot run there (it needs a layer role that the family lacks):")
        for reason, number in notes.items():
            lines += _wrap(reason, 8, f"[{number}]")
    return lines


def _strategy_lines(verbose: bool) -> list[str]:
    import strategies

    lines = ["strategies (STRATEGY=name:key=value; larger acquisition = labeled first; docs/strategies.md):"]
    for item in strategies.describe():
        text = item["description"]
        if not verbose:  # the first sentence
            text = text.split(". ")[0].rstrip(".") + "."
        else:
            text += f" Needs: {', '.join(item['needs'])}."
        lines += _wrap(text, 20, item["name"])
        if item["options"]:
            options = ", ".join(f"{k}={v}" for k, v in item["options"].items())
            lines += _wrap(f"options (defaults): {options}", 20)
    if not verbose:
        lines.append("python -m ml_backend --list --verbose: every reason, description and input in full")
    return lines


def list_text(verbose: bool = False) -> str:
    """What ``--list`` prints: lines of at most WIDTH characters."""
    return "\n".join([*_backbone_lines(verbose), *_strategy_lines(verbose)])


def _check(settings) -> int:
    from ml_backend.app import create_app

    app = create_app(settings)
    app.extensions["backend"].close()
    print("configuration OK:", settings)
    return 0


def _serve(settings) -> int:
    from gunicorn.app.base import BaseApplication

    from ml_backend.service.pools import post_worker_init

    class Server(BaseApplication):
        """The app is built in each worker process (never in the master and then forked): a worker
        that the OOM killer or a crash replaces restores every project from MODEL_DIR itself."""

        def load_config(self):
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 300)  # LS waits up to 100 s for /predict
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("accesslog", None)
            self.cfg.set("control_socket_disable", True)  # one shared path in $HOME would clash between servers
            self.cfg.set("post_worker_init", post_worker_init)  # request threads started whole (pools.py)

        def load(self):
            from ml_backend.app import create_app

            try:
                return create_app(settings)
            except ConfigError as exc:  # e.g. weights that cannot be loaded: exit code 3 stops the arbiter
                print(f"configuration error: {exc}", file=sys.stderr, flush=True)
                sys.exit(3)

    Server().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    parser.add_argument("--list", action="store_true", help="list backbones and strategies, then exit")
    parser.add_argument("--verbose", action="store_true", help="with --list: every description and reason in full")
    parser.add_argument("--check", action="store_true", help="validate the settings and load the weights, then exit")
    parser.add_argument(
        "--settings",
        action="store_true",
        help="print every setting (environment variable, default, meaning) as a Markdown table, then exit",
    )
    parser.add_argument(
        "--webhook-header",
        metavar="PROJECT_ID",
        help="print the X-Active-Adaptation-Secret header value for a project's webhook "
        "(to set it by hand in Label Studio), then exit",
    )
    args = parser.parse_args(argv)
    if args.settings:
        from ml_backend.service.settings import settings_table

        print(settings_table())
        return 0
    if args.webhook_header is not None:
        return _webhook_header(args.webhook_header)
    if args.list:
        print(list_text(args.verbose))
        return 0
    from ml_backend.service.settings import Settings

    try:
        settings = Settings.from_env()
        if args.check:
            return _check(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return _serve(settings)
