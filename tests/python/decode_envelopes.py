"""Decodes envelopes exactly as Python spa-dat 0.4.0 does (JsonSerializer().deserialize).

stdin: one hex-encoded envelope per line. stdout: one JSON object per line —
{"ok": false, "error": "..."} or {"ok": true, "fields": {...}, "timestamp_defaulted": bool}.
{"ok": false} carries "field" when pydantic names one field. Payload is reported as text (Python holds it as bytes of UTF-8), Timestamp as a decimal string
(Python ints have no size limit), QualityOfService as its number.
"""
import json
import logging
import sys

import pydantic
from spa_dat.serialization import JsonSerializer

logging.disable(logging.CRITICAL)
serializer = JsonSerializer()

for line in sys.stdin:
    raw = bytes.fromhex(line.strip())
    try:
        message = serializer.deserialize(raw)
        try:
            parsed = json.loads(raw)
            defaulted = "Timestamp" not in parsed
        except Exception:
            defaulted = False
        qos = message.quality_of_service
        result = {
            "ok": True,
            "timestamp_defaulted": defaulted,
            "fields": {
                "Payload": message.payload.decode("utf-8"),
                "Topic": message.topic,
                "ContentType": message.content_type,
                "ClientId": message.client_id,
                "ClientName": message.client_name,
                "QualityOfService": qos.value if hasattr(qos, "value") else int(qos),
                "ResponseTopic": message.response_topic,
                "Timestamp": str(message.timestamp),
            },
        }
    except BaseException as error:  # Python's own crashes (TypeError, RecursionError) too
        result = {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        if isinstance(error, pydantic.ValidationError):
            # The field pydantic names (by its alias), if one field is at fault.
            locations = {str(e["loc"][0]) for e in error.errors() if e.get("loc")}
            if len(locations) == 1:
                result["field"] = locations.pop()
    print(json.dumps(result), flush=False)
sys.stdout.flush()
