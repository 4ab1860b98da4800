"""Python spa-dat 0.4.0 responder: answers COUNT requests on TOPIC with the payload reversed."""
import asyncio
import sys

from spa_dat.serialization import JsonSerializer
from spa_dat.socket.mqtt import MqttConfig, MqttSocket
from spa_dat.socket.typedef import SpaMessage


async def main(host: str, port: int, topic: str, count: int) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    config = MqttConfig(host=host, port=port, qos=1, default_subscription_topics=[topic], client_id="py-responder")
    async with MqttSocket(config, queue, JsonSerializer()) as socket:
        await asyncio.sleep(0.2)  # the reader task and subscription are up
        print("ready", flush=True)
        for _ in range(count):
            request = await queue.get()
            reply = SpaMessage(Topic=request.response_topic, Payload=request.payload[::-1], ClientName="python-responder")
            await socket.publish(reply)
        await asyncio.sleep(0.5)  # let the last publish leave before disconnecting


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
