import socket

import pytest


def test_guard_rejects_non_loopback_address():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ConnectionRefusedError, match="only loopback"):
            sock.connect(("192.0.2.1", 80))
    finally:
        sock.close()


def test_guard_allows_loopback_listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(server.getsockname())
        peer, _ = server.accept()
        peer.close()
    finally:
        client.close()
        server.close()
