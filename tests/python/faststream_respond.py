"""FastStream 0.7.8: a FastStream responder; answers each request with its body upper-cased.

  faststream_respond.py <mqtt|kafka> <addr> <topic> [--group G] [--qos N] [--max-seconds S]

The handler returns the body (UTF-8 text) upper-cased, and FastStream answers as its responders
do: to the request's reply_to (MQTT 5: response topic; Kafka: `reply_to` header) with the
request's correlation id (MQTT 5: correlation data; Kafka: `correlation_id` header), the answer
being a str (text/plain). Prints `ready` once subscribed (MQTT: after the SUBACK; Kafka: with its
partitions and a position on each, from the end of the topic, so requests sent from then on are
answered). Runs until stdin is closed (when it is a pipe), SIGTERM or SIGINT, then exits 0;
at the latest after --max-seconds (default 600), a bound should nobody stop it.
MQTT --group: a shared subscription $share/G/<topic>; Kafka --group: the consumer group.
"""
import asyncio
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
import faststream_common as common  # noqa: E402


async def main(args) -> None:  # noqa: ANN001
    broker = common.make_broker(args.transport, args.address, "respond")
    if args.transport == "mqtt":
        from faststream.mqtt import QoS
        options = {"qos": QoS(args.qos), "shared": args.group}
    else:
        options = {"group_id": args.group}
    subscriber = broker.subscriber(args.topic, decoder=common.raw_decoder, **options)

    @subscriber
    async def respond(body: bytes) -> str:
        return body.decode("utf-8", errors="replace").upper()

    stop = common.stop_signal()
    try:
        await asyncio.wait_for(starting(broker, subscriber, args), common.OVERALL_LIMIT)
    except asyncio.TimeoutError:
        await common.stop(broker)
        raise common.Failure(f"not subscribed within {common.OVERALL_LIMIT:.0f} s", 3) from None
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        print(f"{common.NAME}: stopping after --max-seconds {args.max_seconds:g}", file=sys.stderr, flush=True)
    await common.stop(broker)


async def starting(broker, subscriber, args) -> None:  # noqa: ANN001
    await common.start(broker, args.transport, args.address)
    await common.wait_assigned(subscriber)


if __name__ == "__main__":
    p = common.parser("Answers requests with their body upper-cased (a FastStream subscriber).")
    p.add_argument("topic")
    p.add_argument("--group", help="Kafka consumer group / MQTT shared-subscription group")
    common.add_qos_option(p)
    p.add_argument("--max-seconds", type=float, default=600.0)
    arguments = p.parse_args()
    common.run(lambda: main(arguments), limit=None)
