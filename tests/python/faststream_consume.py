"""FastStream 0.7.8: a FastStream subscriber that prints COUNT messages, one JSON line each.

  faststream_consume.py <mqtt|kafka> <addr> <topic> <count> [--group G] [--qos N]

Prints `ready` once the subscription is in place: MQTT, after the broker's SUBACK (FastStream's
start returns only then); Kafka, once the consumer has its partitions and a fetch position on
each. Then per message {"body", "content_type", "correlation_id", "reply_to", "headers"} from
FastStream's message object (the body as UTF-8 text); exits 0 after COUNT messages. Kafka reads
from the earliest offset (a record sent before the subscription is not missed; with --group, from
the group's committed offset). MQTT --group: a shared subscription $share/G/<topic>. The body is
taken as bytes whatever the content type, and nothing is answered to a reply_to.
"""
import asyncio
import sys

from faststream import Context

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
import faststream_common as common  # noqa: E402


async def main(args) -> None:  # noqa: ANN001
    broker = common.make_broker(args.transport, args.address, "consume")
    done = asyncio.Event()
    received = 0
    if args.transport == "mqtt":
        from faststream.mqtt import QoS
        options = {"qos": QoS(args.qos), "shared": args.group}
    else:
        options = {"group_id": args.group, "auto_offset_reset": "earliest"}
    subscriber = broker.subscriber(args.topic, no_reply=True, decoder=common.raw_decoder, **options)

    @subscriber
    async def handle(body: bytes, message=Context("message")) -> None:  # noqa: ANN001, ARG001
        nonlocal received
        if received >= args.count:
            return
        received += 1
        print(common.message_json(message), flush=True)
        if received >= args.count:
            done.set()

    await common.start(broker, args.transport, args.address)
    try:
        await common.wait_assigned(subscriber)
        print("ready", flush=True)
        if args.count > 0:
            await done.wait()
    finally:
        await common.stop(broker)


if __name__ == "__main__":
    p = common.parser("Prints COUNT messages a FastStream subscriber receives.")
    p.add_argument("topic")
    p.add_argument("count", type=int)
    p.add_argument("--group", help="Kafka consumer group / MQTT shared-subscription group")
    common.add_qos_option(p)
    arguments = p.parse_args()
    common.run(lambda: main(arguments))
