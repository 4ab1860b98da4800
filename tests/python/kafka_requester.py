"""Python spa-dat 0.4.0 Kafka requester: one request, prints the reply as wire JSON."""
import asyncio
import sys

from spa_dat.serialization import JsonSerializer
from spa_dat.socket.kafka import KafkaConfig, KafkaSocket
from spa_dat.socket.typedef import SpaMessage


async def main(bootstrap: str, topic: str, payload: str) -> None:
    config = KafkaConfig(bootstrap_servers=bootstrap, client_id="py-kafka-requester")
    async with KafkaSocket(config, asyncio.Queue(), JsonSerializer()) as socket:
        request = SpaMessage(Topic=topic, Payload=payload.encode(), ClientName="python-requester")
        reply = await asyncio.wait_for(socket.request(request), 60)
        print(JsonSerializer().serialize(reply).decode(), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
