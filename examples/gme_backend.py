"""A game backend moving from GME to OpenGME: Tencent Cloud's own SDK, only the endpoint changed; and
the check of a recording callback's signature.

    pip install tencentcloud-sdk-python-gme
    .venv/bin/python examples/gme_backend.py SECRET_ID SECRET_KEY BIZID ROOM [--endpoint HOST:PORT]
"""
import argparse
import hashlib
import hmac

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.gme.v20180711 import gme_client, models


def gme(secret_id, secret_key, endpoint="127.0.0.1:8090"):
    http = HttpProfile(endpoint=endpoint, protocol="http")  # was gme.tencentcloudapi.com
    return gme_client.GmeClient(credential.Credential(secret_id, secret_key), "ap-guangzhou",
                                ClientProfile(httpProfile=http))


def callback_is_authentic(body, signature, app_key):
    """A recording callback came from the server: its Signature header is HMAC-SHA1 of the body."""
    expected = hmac.new(app_key.encode(), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(signature, expected)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("secret_id", metavar="SECRET_ID")
    parser.add_argument("secret_key", metavar="SECRET_KEY")
    parser.add_argument("biz_id", metavar="BIZID", type=int)
    parser.add_argument("room", metavar="ROOM")
    parser.add_argument("--endpoint", default="127.0.0.1:8090")
    args = parser.parse_args()
    request = models.DescribeRoomInfoRequest()
    request.SdkAppId, request.StrRoomIds = args.biz_id, [args.room]
    reply = gme(args.secret_id, args.secret_key, args.endpoint).DescribeRoomInfo(request)
    for room in reply.RoomUsers:
        print(room.StrRoomId, "members:", *room.Uins, *room.StrUins)
