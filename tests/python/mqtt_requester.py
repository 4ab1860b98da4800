"""Python spa-dat 0.4.0 requester: sends one request and prints the reply as wire JSON."""
import asyncio
import sys

from spa_dat.serialization import JsonSerializer
from spa_dat.socket.mqtt import MqttConfig, MqttSocket
from spa_dat.socket.typedef import SpaMessage


async def main(host: str, port: int, topic: str, payload: str) -> None:
    config = MqttConfig(host=host, port=port, client_id="py-requester")
    async with MqttSocket(config, None, JsonSerializer()) as socket:
        request = SpaMessage(Topic=topic, Payload=payload.encode(), ClientName="python-requester")
        reply = await asyncio.wait_for(socket.request(request), 20)
        print(JsonSerializer().serialize(reply).decode(), flush=True)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
