"""The asyncua boundary: a ServiceFault answering OpenSecureChannel is read, and asyncua's
traceback for an answer it cannot parse becomes one line."""

from __future__ import annotations

import logging
import sys

from asyncua import ua
from asyncua.common.connection import MessageChunk
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.ua.ua_binary import struct_to_binary

from agent.connectors.opcua.session import service_fault_status


def message(response: object, message_type: ua.MessageType) -> ua.Message:
    chunks = MessageChunk.message_to_chunks(SecurityPolicyNone(), struct_to_binary(response), 65536, message_type)
    return ua.Message(chunks)


def test_a_service_fault_answering_open_secure_channel_gives_its_status() -> None:
    fault = ua.ServiceFault()
    fault.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadSecurityChecksFailed)
    status = service_fault_status(message(fault, ua.MessageType.SecureOpen))
    assert status is not None and status.value == ua.StatusCodes.BadSecurityChecksFailed


def test_other_messages_are_left_to_asyncua() -> None:
    fault = ua.ServiceFault()
    fault.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadTooManyPublishRequests)
    assert service_fault_status(message(fault, ua.MessageType.SecureMessage)) is None  # a normal service fault
    assert service_fault_status(message(ua.OpenSecureChannelResponse(), ua.MessageType.SecureOpen)) is None
    assert service_fault_status(ua.Acknowledge()) is None


def test_an_unparseable_answer_is_logged_as_one_line_without_traceback() -> None:
    logger = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("Not enough data left in buffer, request for 4, we have 0")
        except ValueError:
            logger.exception("Exception raised while parsing message from server")
            exc_info = sys.exc_info()
        logger.error("Got error status from server: %s", "BadSecurityChecksFailed")
    finally:
        logger.removeHandler(handler)
    assert exc_info[0] is ValueError
    assert [(r.getMessage(), r.exc_info) for r in records] == [
        ("Exception raised while parsing message from server: ValueError: Not enough data left in buffer, "
         "request for 4, we have 0", None)]
