"""The ``smartbroker`` command: ``serve`` runs the broker; admin commands talk to its
management API (``cli.admin``), client commands speak AMQP (``cli.messages``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer vendors click since 0.2x: its exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_errors  # type: ignore[no-redef]

from smartbroker.config import Config, ConfigError


class OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an unknown option, a bad value) as one line on
    stderr, like every other failure, instead of rich's boxed panel; exit code 2 as click."""

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:  # the help text, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:  # typer's own class (its vendored click has none)
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(help="smartbroker: an AMQP 0-9-1 broker with a Kafka-style log mode.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=OneLineErrors)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 0.0.0.0]")] = None,
    port: Annotated[int | None, typer.Option(help="AMQP port [default: 5672]")] = None,
    management_port: Annotated[int | None, typer.Option(help="Management HTTP port [default: 15672]")] = None,
    prometheus_port: Annotated[int | None, typer.Option(
        help="Prometheus /metrics port, as RabbitMQ's plugin; 0 = off [default: 15692]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [default: ./data]")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error [default: info]")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file")] = None,
    tls_port: Annotated[int | None, typer.Option(help="AMQPS port [default: 5671]")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: enables TLS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA bundle for client certificates")] = None,
    kafka_port: Annotated[int | None, typer.Option(
        help="Kafka protocol port; 0 = off [default: 9092]")] = None,
    kafka_advertised_host: Annotated[str | None, typer.Option(
        help="Host Kafka clients are told to connect to [default: the address they used]")] = None,
    kafka_tls_port: Annotated[int | None, typer.Option(
        help="Kafka over TLS (SSL, SASL_SSL) with the --tls-* files; 0 = off [default: 0]")] = None,
    kafka_sasl_required: Annotated[bool | None, typer.Option(
        "--kafka-sasl-required/--kafka-sasl-optional",
        help="Kafka clients must authenticate with SASL (else: the default user under its "
             "loopback rule) [default: optional]")] = None,
    etcd: Annotated[str | None, typer.Option(
        help="etcd endpoints URL[,URL...]: join a cluster (docs/cluster.md) [default: none, "
             "a single node]")] = None,
    node_name: Annotated[str | None, typer.Option(
        help="This node's name in the cluster [default: smartbroker@<hostname>]")] = None,
    cluster_name: Annotated[str | None, typer.Option(
        help="The cluster's name: its etcd key prefix [default: smartbroker]")] = None,
    cluster_port: Annotated[int | None, typer.Option(
        help="Port of the link between nodes [default: 25672]")] = None,
    advertise_host: Annotated[str | None, typer.Option(
        help="Address other nodes reach this one at [default: --host, or the hostname]")] = None,
    cluster_secret: Annotated[str | None, typer.Option(
        help="Shared secret of the cluster link (better: SMARTBROKER_CLUSTER_SECRET) "
             "[default: one kept in etcd]")] = None,
    workers: Annotated[str | None, typer.Option(
        help="Run N nodes (or 'auto': one per core) as one cluster sharing the AMQP and "
             "Kafka ports, with their own etcd unless --etcd (docs/cluster.md) "
             "[default: one process]")] = None,
) -> None:
    """Run the broker (AMQP on --port, management API on --management-port, Kafka on
    --kafka-port)."""
    flags = dict(host=host, port=port, management_port=management_port,
                 prometheus_port=prometheus_port,
                 data_dir=data_dir, log_level=log_level, tls_port=tls_port,
                 tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
                 kafka_port=kafka_port, kafka_advertised_host=kafka_advertised_host,
                 kafka_tls_port=kafka_tls_port, kafka_sasl_required=kafka_sasl_required,
                 etcd=etcd, node_name=node_name, cluster_name=cluster_name,
                 cluster_port=cluster_port, advertise_host=advertise_host,
                 cluster_secret=cluster_secret)
    try:
        cfg = Config.load(config, **flags)
    except ConfigError as exc:  # already one line: a bad value, file or variable
        fail(str(exc))
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers is not None:
        serve_workers(cfg, {k: v for k, v in flags.items() if v is not None}, config, workers)
        return
    from smartbroker.server.app import StartupError, run

    try:
        run(cfg)
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # still one line; the traceback only with --log-level debug
        logging.getLogger("smartbroker").debug("the broker stopped", exc_info=True)
        fail(f"the broker stopped: {type(exc).__name__}: {exc}")


def serve_workers(cfg: Config, flags: dict[str, Any], config: Path | None, count: str) -> None:
    """``serve --workers``: a supervisor of N cluster nodes (cluster/workers.py)."""
    from smartbroker.cluster.workers import WorkersError, run_workers, worker_count

    try:
        code = run_workers(cfg, flags, config, worker_count(count))
    except (ValueError, WorkersError) as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the smartbroker version."""
    import smartbroker

    typer.echo(smartbroker.__version__)


def _register_commands() -> None:
    from smartbroker.cli import (
        access,
        admin,
        cluster,
        demo,
        dlq,
        messages,
        replicas,
        stream_replicas,
        streams,
    )

    admin.register(app)
    access.register(app)
    messages.register(app)
    dlq.register(app)
    streams.register(app)
    demo.register(app)
    cluster.register(app)
    replicas.register(admin.queues_app, cluster.cluster_app)
    stream_replicas.register(streams.streams_app)


_register_commands()
