"""Python spa-dat 0.4.0 Kafka responder: answers COUNT requests on TOPIC with the payload reversed."""
import asyncio
import os
import sys

from spa_dat.serialization import JsonSerializer
from spa_dat.socket.kafka import KafkaConfig, KafkaSocket
from spa_dat.socket.typedef import SpaMessage


async def main(bootstrap: str, topic: str, count: int) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    config = KafkaConfig(bootstrap_servers=bootstrap, default_subscription_topics=[topic], client_id="py-kafka-responder")
    async with KafkaSocket(config, queue, JsonSerializer()) as socket:
        # aiokafka without a group starts at the end of the topic: be assigned before "ready".
        while not socket.consumer.assignment():
            await asyncio.sleep(0.1)
        await socket.consumer.seek_to_end()
        await asyncio.sleep(1)
        print("ready", flush=True)
        for _ in range(count):
            request = await queue.get()
            reply = SpaMessage(Topic=request.response_topic, Payload=request.payload[::-1], ClientName="python-responder")
            await socket.publish(reply)
        # Every reply is on the broker (publish waits for it). aiokafka 0.8 can hang while it
        # closes, on metadata of reply topics the requester deleted meanwhile (seen in
        # CI and once in the test command, 120 s): its close is not what the tests judge.
        os._exit(0)


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
