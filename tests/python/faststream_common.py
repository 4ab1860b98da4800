"""Shared by the FastStream 0.7.8 interop scripts tests/python/faststream_*.py (not a script).

They run in the venv of scripts/faststream-venv.sh (SPA_DAT_FASTSTREAM_PYTHON). The first argument
picks the transport, `mqtt` (MQTT 5.0, FastStream's MQTTBroker over zmqtt) or `kafka`
(FastStream's KafkaBroker over aiokafka); the second is the address, `host:port` (for Kafka the
bootstrap `host:port`). stdout carries only what the tests read (`ready`, `sent`, JSON lines);
FastStream's own log and every error go to stderr. Every wait is bounded: a script that cannot
reach its broker, or waits too long, exits non-zero with a message on stderr.
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import stat
import sys
import threading
import uuid

from faststream.message import encode_message

NAME = os.path.basename(sys.argv[0])
# Bounds: the whole run of a script (unless it says otherwise), and the connection to the broker.
OVERALL_LIMIT = 60.0
CONNECT_LIMIT = 20.0
STOP_LIMIT = 15.0

# FastStream logs to stdout by default: its log goes to stderr here, warnings and errors only.
LOGGER = logging.getLogger("faststream-interop")
LOGGER.setLevel(logging.WARNING)
LOGGER.propagate = False
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter(f"{NAME}: %(levelname)s %(message)s"))
LOGGER.addHandler(_handler)
# aiokafka's warnings, and its errors about a topic not yet in its metadata (every fresh test topic
# before it is created), are noise on stderr; errors that matter reach the scripts as exceptions.
logging.getLogger("aiokafka").setLevel(logging.ERROR)
logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)


class Failure(Exception):
    """Ends the script with `message` on stderr and exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every script takes: the transport and the broker address."""
    p = argparse.ArgumentParser(prog=NAME, description=description)
    p.add_argument("transport", choices=["mqtt", "kafka"])
    p.add_argument("address", help="host:port (MQTT broker, or Kafka bootstrap server)")
    return p


def add_header_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a header (Kafka) / user property (MQTT 5); repeatable")


def add_qos_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qos", type=int, choices=[0, 1, 2], default=0,
                   help="MQTT QoS (default 0, FastStream's default); ignored on Kafka")


def headers_of(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise Failure(f"--header wants NAME=VALUE, not {pair!r}", 2)
        headers[name] = value
    return headers


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise Failure(f"address {address!r} is not host:port", 2)
    return host, int(port)


class ContentTypeCodec:
    """FastStream's default encoding (bytes as they are, str as UTF-8, the rest as JSON), with the
    content type given on the command line instead of the one FastStream would choose
    (FastStream's publish API has no content-type argument; a codec is its way to set one)."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type

    async def decode(self, msg):  # noqa: ANN001, ANN201 - not used: decoders are per subscriber
        from faststream.message import decode_message
        return decode_message(msg)

    async def encode(self, msg, serializer=None):  # noqa: ANN001, ANN201
        payload, _ = encode_message(msg, serializer)
        return payload, self.content_type


def make_broker(transport: str, address: str, role: str, content_type: str | None = None):  # noqa: ANN201
    """FastStream's broker for `transport` (not connected yet)."""
    codec = ContentTypeCodec(content_type) if content_type is not None else None
    client_id = f"faststream-{role}-{uuid.uuid4().hex[:8]}"
    if transport == "mqtt":
        from faststream.mqtt import MQTTBroker, ReconnectConfig
        host, port = _host_port(address)
        return MQTTBroker(
            f"mqtt://{host}:{port}",
            client_id=client_id,
            version="5.0",  # FastStream's default for MQTTBroker; said here so it stays so
            # No reconnection: an unreachable broker fails the script at once, a lost one fails it.
            reconnect=ReconnectConfig(enabled=False),
            mqtt_connect_timeout=CONNECT_LIMIT,
            codec=codec,
            logger=LOGGER,
            graceful_timeout=5.0,
        )
    from faststream.kafka import KafkaBroker
    _host_port(address)
    return KafkaBroker(
        address,
        client_id=client_id,
        request_timeout_ms=15_000,
        codec=codec,
        logger=LOGGER,
        graceful_timeout=5.0,
    )


async def start(broker, transport: str, address: str) -> None:  # noqa: ANN001
    """Connects and starts the broker with its subscribers (MQTT: each SUBSCRIBE acknowledged)."""
    try:
        await asyncio.wait_for(broker.start(), CONNECT_LIMIT)
    except asyncio.TimeoutError:
        await stop(broker)
        raise Failure(f"the {transport} broker at {address} did not answer within {CONNECT_LIMIT:.0f} s") from None
    except Exception as error:  # noqa: BLE001 - connection errors of zmqtt, aiokafka, the OS
        await stop(broker)
        raise Failure(f"cannot connect to (or subscribe on) the {transport} broker at {address}: "
                      f"{type(error).__name__}: {error}") from None


async def stop(broker) -> None:  # noqa: ANN001
    try:
        await asyncio.wait_for(broker.stop(), STOP_LIMIT)
    except asyncio.TimeoutError:
        print(f"{NAME}: the broker did not stop within {STOP_LIMIT:.0f} s", file=sys.stderr, flush=True)
    except Exception as error:  # noqa: BLE001 - stopping is best effort
        print(f"{NAME}: stopping the broker: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


async def wait_assigned(subscriber) -> None:  # noqa: ANN001
    """Kafka: waits until the subscriber's consumer has its partitions and a fetch position on each
    (the offset reset done), so a record sent from now on is consumed. MQTT: nothing to wait for
    (the broker's start returned after the SUBACK)."""
    consumer = getattr(subscriber, "consumer", None)
    if consumer is None:
        return
    from aiokafka.errors import IllegalStateError
    while True:
        assignment = consumer.assignment()
        if not assignment:
            await asyncio.sleep(0.05)
            continue
        try:
            for partition in assignment:
                await consumer.position(partition)
        except IllegalStateError:  # a rebalance took the partition meanwhile: wait again
            continue
        return


async def raw_decoder(msg):  # noqa: ANN001, ANN201
    """The body as bytes, whatever the content type: FastStream's default decoder fails on a body
    that is not JSON under application/json, and the scripts must show every message."""
    return msg.body


def message_json(msg) -> str:  # noqa: ANN001
    """One JSON line from FastStream's message object (StreamMessage), as the tests read it."""
    body = msg.body
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", errors="replace")
    return json.dumps({
        "body": body,
        "content_type": msg.content_type,
        "correlation_id": msg.correlation_id,
        "reply_to": msg.reply_to,
        "headers": dict(msg.headers),
    }, default=str)


def run(main, limit: float | None = OVERALL_LIMIT) -> None:  # noqa: ANN001
    """Runs `main()` within `limit` seconds (None: no overall limit) and exits: 0 when it returns,
    non-zero with a message on stderr when it fails or takes too long."""
    if limit is not None:
        # Last resort, should the event loop itself be stuck (e.g. in a client's close).
        def kill() -> None:
            print(f"{NAME}: still running {limit + 15:.0f} s after the start: killed itself",
                  file=sys.stderr, flush=True)
            os._exit(3)
        watchdog = threading.Timer(limit + 15, kill)
        watchdog.daemon = True
        watchdog.start()

    async def bounded() -> None:
        if limit is None:
            await main()
        else:
            try:
                await asyncio.wait_for(main(), limit)
            except asyncio.TimeoutError:
                raise Failure(f"gave up after {limit:.0f} s", 3) from None

    try:
        asyncio.run(bounded())
    except Failure as failure:
        print(f"{NAME}: {failure}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(failure.code)
    except KeyboardInterrupt:
        os._exit(130)
    sys.stdout.flush()
    sys.exit(0)


def stop_signal() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, or when stdin is closed (if stdin is a pipe or socket:
    a terminal, /dev/null or a file is not watched, and the script says so on stderr)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        def read_until_closed() -> None:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            loop.call_soon_threadsafe(event.set)
        threading.Thread(target=read_until_closed, daemon=True).start()
    else:
        print(f"{NAME}: stdin is not a pipe: not watched (stop with SIGTERM)", file=sys.stderr, flush=True)
    return event
