"""FastStream 0.7.8: sends one request and prints the reply as one JSON line.

  faststream_request.py <mqtt|kafka> <addr> <topic> <body> [--timeout SECONDS] [--header NAME=VALUE]...
      [--qos N]

MQTT: FastStream's broker.request() (MQTT 5 response topic `_zmqtt/reply/<32 hex>` and
correlation data, a uuid4 as UTF-8). Kafka, where FastStream's request() works only with its test
client: the request is published with reply_to a fresh topic `faststream-reply-<32 hex>` and
correlation_id a uuid4, after a FastStream subscriber on that topic has its partitions; the first
reply there with that correlation_id is printed. The reply as faststream_consume.py prints a
message. No reply within --timeout (default 10 s): exit 1 with a message on stderr.
"""
import asyncio
import sys
import uuid

from faststream import Context

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
import faststream_common as common  # noqa: E402


async def main(args) -> None:  # noqa: ANN001
    headers = common.headers_of(args.header)
    broker = common.make_broker(args.transport, args.address, "request")
    if args.transport == "kafka":
        reply_topic = f"faststream-reply-{uuid.uuid4().hex}"
        correlation_id = str(uuid.uuid4())
        replies: asyncio.Queue = asyncio.Queue()
        subscriber = broker.subscriber(reply_topic, auto_offset_reset="earliest", no_reply=True, decoder=common.raw_decoder)

        @subscriber
        async def on_reply(body: bytes, message=Context("message")) -> None:  # noqa: ANN001, ARG001
            await replies.put(message)

    await common.start(broker, args.transport, args.address)
    try:
        try:
            if args.transport == "mqtt":
                from faststream.mqtt import QoS
                reply = await broker.request(args.body, args.topic, timeout=args.timeout, headers=headers or None,
                                             qos=QoS(args.qos))
            else:
                await common.wait_assigned(subscriber)
                await broker.publish(args.body, args.topic, headers=headers or None, reply_to=reply_topic,
                                     correlation_id=correlation_id)
                reply = await asyncio.wait_for(matching(replies, correlation_id), args.timeout)
        except asyncio.TimeoutError:
            raise common.Failure(f"no reply on {args.topic!r} within {args.timeout:g} s") from None
        print(common.message_json(reply), flush=True)
    finally:
        await common.stop(broker)


async def matching(replies: asyncio.Queue, correlation_id: str):  # noqa: ANN201
    """The first reply with `correlation_id`; others are reported on stderr and skipped."""
    while True:
        reply = await replies.get()
        if reply.correlation_id == correlation_id:
            return reply
        print(f"{common.NAME}: skipped a reply with correlation_id {reply.correlation_id!r}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    p = common.parser("Sends one request with FastStream and prints the reply.")
    p.add_argument("topic")
    p.add_argument("body")
    p.add_argument("--timeout", type=float, default=10.0)
    common.add_header_option(p)
    common.add_qos_option(p)
    arguments = p.parse_args()
    common.run(lambda: main(arguments), limit=max(common.OVERALL_LIMIT, arguments.timeout + 40))
