"""The `alertscale` command: validate, render, serve, token."""
import argparse
import os
import sys

from . import config as cfg

DEFAULT_CONFIG = os.environ.get("ALERTSCALE_CONFIG", "config.yaml")


def load_or_exit(path):
    try:
        return cfg.load(path)
    except cfg.ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        print(f"{path}: {len(e.problems)} problem(s); nothing was changed", file=sys.stderr)
        sys.exit(1)


def cmd_validate(args):
    print(cfg.summary(load_or_exit(args.config)))


def cmd_render(args):
    from . import render
    for path in render.render(load_or_exit(args.config), args.output):
        print(path)


def cmd_serve(args):
    """Run the webhook under gunicorn: one worker owns the engines and locks; threads serve requests."""
    config = load_or_exit(args.config)
    os.environ["ALERTSCALE_CONFIG"] = os.path.abspath(args.config)
    from gunicorn.app.wsgiapp import run
    from gunicorn.config import KNOWN_SETTINGS
    sys.argv = ["gunicorn", "--workers", "1", "--threads", str(args.threads), "--timeout", "120",
                "--bind", args.listen or config["autoscaler"]["listen"], "--access-logfile", "-"]
    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):  # newer gunicorn: no ~/.gunicorn socket
        sys.argv.append("--no-control-socket")
    sys.argv.append("alertscale.app:create_app()")
    run()


def cmd_token(args):
    """Print the API token (created on first use), for curl and Alertmanager."""
    from .api import read_or_create_token
    print(read_or_create_token(cfg.token_file(load_or_exit(args.config))))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="alertscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in [("validate", cmd_validate, "check config.yaml"),
                                  ("render", cmd_render, "write the control server's config files"),
                                  ("serve", cmd_serve, "run the webhook and API under gunicorn"),
                                  ("token", cmd_token, "print the API bearer token")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config.yaml (default: %(default)s)")
        p.set_defaults(func=func)
        if name == "render":
            p.add_argument("-o", "--output", required=True, help="directory to write into")
        if name == "serve":
            p.add_argument("--listen", help="host:port (default: autoscaler.listen)")
            p.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
