"""FastStream 0.7.8: publishes one message with FastStream's own publisher, prints `sent`.

  faststream_publish.py <mqtt|kafka> <addr> <topic> <body> [--header NAME=VALUE]...
      [--content-type CT] [--correlation-id ID] [--reply-to TOPIC] [--json] [--raw] [--qos N]

The body goes as FastStream sends a str: UTF-8, content type text/plain. --json: the body is parsed
as JSON and the value published (a dict, a list, a number: FastStream writes it as JSON with
application/json). --raw: the body's UTF-8 bytes, which FastStream sends without a content type.
--content-type: this content type instead of FastStream's choice. Without --correlation-id
FastStream makes one (a uuid4). MQTT is MQTT 5.0; headers are its user properties.
"""
import json
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
import faststream_common as common  # noqa: E402


async def main(args) -> None:  # noqa: ANN001
    headers = common.headers_of(args.header)
    if args.json:
        try:
            body = json.loads(args.body)
        except json.JSONDecodeError as error:
            raise common.Failure(f"--json: the body is not JSON: {error}", 2) from None
    elif args.raw:
        body = args.body.encode()
    else:
        body = args.body
    broker = common.make_broker(args.transport, args.address, "publish", args.content_type)
    await common.start(broker, args.transport, args.address)
    try:
        options = {"headers": headers or None, "correlation_id": args.correlation_id, "reply_to": args.reply_to}
        if args.transport == "mqtt":
            from faststream.mqtt import QoS
            options["qos"] = QoS(args.qos)
        await broker.publish(body, args.topic, **options)
    finally:
        await common.stop(broker)
    print("sent", flush=True)


if __name__ == "__main__":
    p = common.parser("Publishes one message with FastStream's publisher.")
    p.add_argument("topic")
    p.add_argument("body")
    common.add_header_option(p)
    p.add_argument("--content-type")
    p.add_argument("--correlation-id")
    p.add_argument("--reply-to", default="")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--json", action="store_true", help="publish the body parsed as JSON")
    kind.add_argument("--raw", action="store_true", help="publish the body as bytes (no content type)")
    common.add_qos_option(p)
    arguments = p.parse_args()
    common.run(lambda: main(arguments))
