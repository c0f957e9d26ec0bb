"""KServe V2 request decoding and response encoding, checked against tritonclient's own codec."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from infc_runtime.protocol import (
    InferRequest,
    ProtocolError,
    RequestedOutput,
    decode_request,
    encode_response,
    numpy_for_datatype,
    tensor_metadata,
    to_datatype,
)
from infc_runtime.types import ServingConfig, TensorSpec

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]

INPUTS = [TensorSpec("image", "uint8", (2, 3)), TensorSpec("text", "bytes", (-1,))]
OUTPUTS = [TensorSpec("score", "float32", (2,)), TensorSpec("label", "bytes", ())]


def triton_body(
    arrays: dict[str, np.ndarray], *, binary: bool = True, outputs: list[Any] | None = None, **kw: Any
) -> tuple[bytes, str | None]:
    """A request body as tritonclient.http builds it."""
    inputs = []
    for name, array in arrays.items():
        inp = httpclient.InferInput(name, list(array.shape), to_datatype(array.dtype))
        inputs.append(inp.set_data_from_numpy(array, binary_data=binary))
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kw)
    return body, None if json_size is None else str(json_size)


def json_body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def good_inputs() -> dict[str, np.ndarray]:
    text = np.empty((2, 2), dtype=object)
    text[:] = [[b"a", b""], ["\u00e9t\u00e9".encode(), b"\xff\x00raw"]]
    return {"image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "text": text}


# -- datatypes ---------------------------------------------------------------


@pytest.mark.parametrize("datatype", [*DATATYPES, "BYTES"])
def test_datatype_round_trips_through_numpy(datatype: str) -> None:
    assert to_datatype(numpy_for_datatype(datatype)) == datatype


def test_signature_dtype_names_map_to_datatypes() -> None:
    assert [to_datatype(n) for n in ("bool", "uint8", "float16", "float32", "int64", "bytes")] == [
        "BOOL",
        "UINT8",
        "FP16",
        "FP32",
        "INT64",
        "BYTES",
    ]
    assert tensor_metadata(INPUTS[0]) == {"name": "image", "datatype": "UINT8", "shape": [-1, 2, 3]}
    with pytest.raises(ValueError, match="complex64"):
        to_datatype("complex64")
    with pytest.raises(ValueError, match="BF16"):
        numpy_for_datatype("BF16")


# -- decoding ----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_decodes_what_tritonclient_sends(binary: bool) -> None:
    arrays = good_inputs()
    if not binary:  # JSON carries BYTES as UTF-8 strings only
        arrays["text"][1, 1] = b"raw"
    body, length = triton_body(arrays, binary=binary, request_id="r-7")
    req = decode_request(body, INPUTS, OUTPUTS, header_length=length)
    assert req.id == "r-7" and req.rows == 2
    np.testing.assert_array_equal(req.inputs["image"], arrays["image"])
    assert req.inputs["image"].dtype == np.uint8 and req.inputs["image"].flags.writeable
    assert req.inputs["text"].dtype == object and req.inputs["text"].tolist() == arrays["text"].tolist()
    # tritonclient asks for binary outputs when no outputs are named
    assert req.outputs == [RequestedOutput("score", True), RequestedOutput("label", True)]


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_decodes(datatype: str, binary: bool) -> None:
    dtype = numpy_for_datatype(datatype)
    array = (np.arange(6) % 2 == 1) if datatype == "BOOL" else np.arange(6).astype(dtype)
    array = array.reshape(2, 3)
    spec = TensorSpec("t", dtype.name, (3,))
    body, length = triton_body({"t": array}, binary=binary)
    decoded = decode_request(body, [spec], OUTPUTS, header_length=length).inputs["t"]
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, array)


def test_json_data_may_be_nested_or_flat() -> None:
    doc = {
        "inputs": [
            {"name": "image", "shape": [1, 2, 3], "datatype": "UINT8", "data": [[[1, 2, 3], [4, 5, 6]]]},
            {"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["x", "y"]},
        ]
    }
    nested = decode_request(json_body(doc), INPUTS, OUTPUTS)
    doc["inputs"][0]["data"] = [1, 2, 3, 4, 5, 6]
    flat = decode_request(json_body(doc), INPUTS, OUTPUTS)
    np.testing.assert_array_equal(nested.inputs["image"], flat.inputs["image"])
    assert flat.inputs["text"].tolist() == [[b"x", b"y"]]


def test_requested_outputs_and_parameters() -> None:
    outputs = [httpclient.InferRequestedOutput("label", binary_data=False)]
    body, length = triton_body(good_inputs(), outputs=outputs, timeout=2500)
    req = decode_request(body, INPUTS, OUTPUTS, header_length=length)
    assert req.outputs == [RequestedOutput("label", False)]
    assert req.timeout_s == pytest.approx(0.0025)
    doc = json.loads(json_body({"parameters": {"binary_data_output": True}, "outputs": [{"name": "score"}]}))
    doc["inputs"] = [
        {"name": "image", "shape": [1, 2, 3], "datatype": "UINT8", "data": [0] * 6},
        {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]},
    ]
    assert decode_request(json_body(doc), INPUTS, OUTPUTS).outputs == [RequestedOutput("score", True)]


# -- request errors: each names its field --------------------------------------


def base_doc() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "image", "shape": [1, 2, 3], "datatype": "UINT8", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hello"]},
        ]
    }


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = base_doc()
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()

JSON_ERRORS = [
    (mutate("inputs.0.name", "img"), "inputs[0].name: unknown input 'img'"),
    (mutate("inputs.1", _DELETE), "inputs: missing input 'text'"),
    (mutate("inputs.0.datatype", "FP32"), "inputs[0].datatype: input 'image' is UINT8, got 'FP32'"),
    (mutate("inputs.0.shape", [1, 3, 2]), "inputs[0].shape: input 'image' takes [-1, 2, 3]"),
    (mutate("inputs.0.shape", [1, 2]), "inputs[0].shape: input 'image' takes [-1, 2, 3]"),
    (mutate("inputs.0.shape", "1x2x3"), "inputs[0].shape: expected a list of sizes"),
    (mutate("inputs.0.shape", [0, 2, 3]), "inputs[0].shape[0]: the batch needs at least one row"),
    (mutate("inputs.1.shape", [2, 1]), "inputs[1].shape[0]: batch size 2 differs from 1 of input 'image'"),
    (mutate("inputs.0.data", [1, 2, 3]), "inputs[0].data: 3 values do not fill shape [1, 2, 3]"),
    (mutate("inputs.0.data", [1, 2, 3, 4, 5, 6.5]), "inputs[0].data: 6.5 is not a UINT8 value"),
    (mutate("inputs.0.data", [1, 2, 3, 4, 5, 256]), "inputs[0].data: a value is out of range for UINT8"),
    (mutate("inputs.1.data", [7]), "inputs[1].data: 7 is not a BYTES value"),
    (mutate("inputs.0.data", "123456"), "inputs[0].data: expected a list of values"),
    (mutate("inputs.0.data", _DELETE), "inputs[0].data: missing"),
    (mutate("inputs", []), "inputs: expected a non-empty list"),
    (mutate("inputs.1", base_doc()["inputs"][0]), "inputs[1].name: input 'image' is given twice"),
    ({**base_doc(), "outputs": [{"name": "scores"}]}, "outputs[0].name: unknown output 'scores'"),
    ({**base_doc(), "outputs": "label"}, "outputs: expected a list"),
    (
        {**base_doc(), "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]},
        "outputs[0].parameters.binary_data: expected true or false",
    ),
    (
        {**base_doc(), "outputs": [{"name": "score", "parameters": {"classification": 2}}]},
        "outputs[0].parameters.classification: not supported",
    ),
    ({**base_doc(), "id": 5}, "id: expected a string"),
    ({**base_doc(), "parameters": []}, "parameters: expected an object"),
    ({**base_doc(), "parameters": {"timeout": -1}}, "parameters.timeout: expected microseconds"),
]


@pytest.mark.parametrize(("doc", "message"), JSON_ERRORS, ids=[m.split(":")[0] for _, m in JSON_ERRORS])
def test_json_request_errors_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_request(json_body(doc), INPUTS, OUTPUTS)
    assert err.value.status == 400
    assert err.value.message.startswith(message), err.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "request body: malformed JSON"), (b"[1, 2]", "request body: expected a JSON object")],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[")):
        decode_request(body, INPUTS, OUTPUTS)


def binary_doc(image_size: int, text_raw: bytes, rows: int = 1) -> tuple[bytes, str]:
    doc = base_doc()
    doc["inputs"][0] = {"name": "image", "shape": [rows, 2, 3], "datatype": "UINT8"}
    doc["inputs"][0]["parameters"] = {"binary_data_size": image_size}
    doc["inputs"][1] = {"name": "text", "shape": [rows, 1], "datatype": "BYTES"}
    doc["inputs"][1]["parameters"] = {"binary_data_size": len(text_raw)}
    header = json_body(doc)
    return header + bytes(6 * rows) + text_raw, str(len(header))


def text(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_binary_request_round_trip() -> None:
    body, length = binary_doc(6, text(b"ok"))
    req = decode_request(body, INPUTS, OUTPUTS, header_length=length)
    assert req.inputs["text"].tolist() == [[b"ok"]] and req.inputs["image"].shape == (1, 2, 3)


@pytest.mark.parametrize(
    ("image_size", "text_raw", "extra", "message"),
    [
        (5, text(b"ok"), b"", "inputs[0].parameters.binary_data_size: 5 bytes do not hold shape [1, 2, 3] of UINT8"),
        (6, text(b"ok"), b"!", "request body: 1 bytes of binary data belong to no input"),
        (6, text(b"ok", b"no"), b"", "inputs[1].parameters.binary_data_size: 6 bytes follow the last of 1 BYTES"),
        (6, struct.pack("<I", 9) + b"ok", b"", "inputs[1].parameters.binary_data_size: BYTES element 0 claims 9"),
        (6, b"\x01\x00", b"", "inputs[1].parameters.binary_data_size: 1 BYTES elements declared, but the 2 "
                               "bytes given hold at most 0"),
    ],
    ids=["fixed-size", "unclaimed", "bytes-extra", "bytes-overrun", "bytes-truncated"],
)
def test_binary_errors_name_the_field(image_size: int, text_raw: bytes, extra: bytes, message: str) -> None:
    body, length = binary_doc(image_size, text_raw)
    with pytest.raises(ProtocolError) as err:
        decode_request(body + extra, INPUTS, OUTPUTS, header_length=length)
    assert err.value.message.startswith(message), err.value.message


def test_binary_size_beyond_the_body_and_bad_header() -> None:
    body, length = binary_doc(6, text(b"ok"))
    with pytest.raises(ProtocolError, match=r"inputs\[1\].parameters.binary_data_size: 6 bytes declared but 2"):
        decode_request(body[:-4], INPUTS, OUTPUTS, header_length=length)
    for bad in ("abc", "-1", str(len(body) + 1)):
        with pytest.raises(ProtocolError, match="Inference-Header-Content-Length header"):
            decode_request(body, INPUTS, OUTPUTS, header_length=bad)
    doc = base_doc()
    doc["inputs"][0]["parameters"] = {"binary_data_size": 6}
    with pytest.raises(ProtocolError, match=r"inputs\[0\].data: given together with parameters.binary_data_size"):
        decode_request(json_body(doc) + bytes(6), INPUTS, OUTPUTS, header_length=str(len(json_body(doc))))


# -- encoding ----------------------------------------------------------------


def result(rows: int = 2) -> dict[str, np.ndarray]:
    label = np.empty(rows, dtype=object)
    label[:] = [b"cat", "\u017c\u00f3\u0142w".encode()][:rows]
    return {"score": np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) / 3, "label": label}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_reads_encoded_responses(binary: bool) -> None:
    req = InferRequest({}, [RequestedOutput("score", binary), RequestedOutput("label", binary)], 2, id="abc")
    out = result()
    encoded = encode_response(req, out, OUTPUTS, model_name="m", model_version="3")
    assert (encoded.header_length is not None) == binary
    parsed = httpclient.InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.header_length)
    response = parsed.get_response()
    assert response["id"] == "abc" and response["model_name"] == "m" and response["model_version"] == "3"
    score = parsed.as_numpy("score")
    assert score.dtype == np.float32  # cast to the declared output dtype
    np.testing.assert_array_equal(score, out["score"].astype(np.float32))
    labels = out["label"].tolist()
    # the client hands back JSON strings as str, binary BYTES as bytes
    assert parsed.as_numpy("label").tolist() == (labels if binary else [b.decode() for b in labels])


def test_encodes_only_requested_outputs_in_their_own_format() -> None:
    req = InferRequest({}, [RequestedOutput("label", False), RequestedOutput("score", True)], 2)
    encoded = encode_response(req, result(), OUTPUTS, model_name="m", model_version="1")
    assert encoded.header_length is not None and encoded.media_type == "application/octet-stream"
    doc = json.loads(encoded.body[: encoded.header_length])
    assert "id" not in doc
    assert [o["name"] for o in doc["outputs"]] == ["label", "score"]
    assert doc["outputs"][0]["data"] == ["cat", "\u017c\u00f3\u0142w"]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 16}
    assert len(encoded.body) == encoded.header_length + 16


def test_non_utf8_bytes_cannot_be_sent_as_json() -> None:
    req = InferRequest({}, [RequestedOutput("label", False)], 1)
    label = np.array([b"\xff"], dtype=object)
    with pytest.raises(ProtocolError, match="output 'label' holds bytes that are not UTF-8"):
        encode_response(req, {"label": label}, OUTPUTS, model_name="m", model_version="1")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_non_finite_outputs_are_ieee_in_binary_and_an_error_in_json(binary: bool) -> None:
    req = InferRequest({}, [RequestedOutput("score", binary)], 2)
    out = result()
    out["score"][1, 0] = np.nan
    out["score"][1, 1] = np.inf
    if binary:
        encoded = encode_response(req, out, OUTPUTS, model_name="m", model_version="1")
        parsed = httpclient.InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.header_length)
        np.testing.assert_array_equal(parsed.as_numpy("score"), out["score"].astype(np.float32))
        return
    with pytest.raises(ProtocolError) as err:
        encode_response(req, out, OUTPUTS, model_name="m", model_version="1")
    assert err.value.status == 500
    assert err.value.message == ("outputs: model output 'score' holds NaN or infinity (row 1), which JSON cannot "
                                 "carry; ask for it with binary_data=true to get IEEE values")


# -- hostile requests: 400 when inconsistent, 413 over a limit, before any allocation -------------


LIMITS = ServingConfig(max_rows=4, max_elements=1000)
DIGITS = [TensorSpec("image", "uint8", (8, 8))]


def image_doc(shape: list[int], data: Any) -> bytes:
    return json_body({"inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", "data": data}]})


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([2**62, 8, 8], [], "inputs[0].data: 0 values do not fill shape [4611686018427387904, 8, 8] "
                            "(295147905179352825856 values)"),
        ([1, 8, 8], [[0] * 64], "inputs[0].data[0]: a list of 64 where shape [1, 8, 8] has a list of 8"),
        ([2, 8, 8], [[[0] * 8] * 8, [[0] * 8] * 7], "inputs[0].data[1]: a list of 7 where shape [2, 8, 8] has"),
        ([1, 8, 8], [[[0] * 8] * 7 + [[0] * 9]], "inputs[0].data[0][7]: a list of 9"),
        ([1, 8, 8], [[[0] * 8] * 7 + [0]], "inputs[0].data[0][7]: the value 0 where shape [1, 8, 8] has"),
        ([1, 8, 8], [[[[0]] * 8] * 8], "inputs[0].data: mixes lists and values"),
        ([1, 8, 8], [0] * 63 + [[0]], "inputs[0].data: mixes lists and values"),
        ([1, 8, 8], [0] * 65, "inputs[0].data: 65 values do not fill shape [1, 8, 8] (64 values)"),
    ],
    ids=["wrapping-shape", "flat-row", "short-row", "long-list", "value-for-list", "too-deep", "mixed", "too-many"],
)
def test_json_data_must_follow_the_shape(shape: list[int], data: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_request(image_doc(shape, data), DIGITS, OUTPUTS, limits=LIMITS)
    assert err.value.status == 400 and err.value.message.startswith(message), err.value.message


def test_nested_and_flat_data_decode_alike() -> None:
    pixels = np.arange(128, dtype=np.uint8).reshape(2, 8, 8)
    nested = decode_request(image_doc([2, 8, 8], pixels.tolist()), DIGITS, OUTPUTS).inputs["image"]
    flat = decode_request(image_doc([2, 8, 8], pixels.ravel().tolist()), DIGITS, OUTPUTS).inputs["image"]
    np.testing.assert_array_equal(nested, pixels)
    np.testing.assert_array_equal(flat, pixels)


def test_rows_and_elements_over_the_limits_are_413_naming_the_spec_key() -> None:
    big = ServingConfig(max_rows=4, max_elements=1000)
    body = image_doc([5, 8, 8], [0] * 320)
    with pytest.raises(ProtocolError) as err:
        decode_request(body, DIGITS, OUTPUTS, limits=big)
    assert err.value.status == 413 and err.value.message == (
        "inputs[0].shape[0]: 5 rows, more than the 4 one request may carry (serving.max_rows); "
        "send them in several requests")
    assert decode_request(body, DIGITS, OUTPUTS).rows == 5, "without limits, only consistency is checked"
    inputs = good_inputs()
    inputs["text"][1, 1] = b"utf-8"  # JSON carries text only
    for binary in (False, True):
        body, length = triton_body(inputs, binary=binary)  # 12 + 4 elements
        with pytest.raises(ProtocolError) as err:
            decode_request(body, INPUTS, OUTPUTS, header_length=length, limits=ServingConfig(max_elements=15))
        assert err.value.status == 413 and err.value.message.startswith(
            "inputs[1].shape: the request's inputs hold 16 elements so far, more than the 15 one request may carry "
            "(serving.max_elements)"), err.value.message
        assert decode_request(body, INPUTS, OUTPUTS, header_length=length, limits=ServingConfig(max_elements=16))


@pytest.mark.parametrize("count", [300_000_000, 10**12])
def test_a_bytes_shape_the_body_cannot_hold_is_400_without_allocating(count: int) -> None:
    doc = {"inputs": [{"name": "text", "shape": [count, 1], "datatype": "BYTES",
                       "parameters": {"binary_data_size": 5}}]}
    header = json_body(doc)
    started = time.perf_counter()
    with pytest.raises(ProtocolError) as err:
        decode_request(header + struct.pack("<I", 1) + b"x", [INPUTS[1]], OUTPUTS, header_length=str(len(header)))
    assert time.perf_counter() - started < 1, "nothing proportional to the declared count"
    assert err.value.status == 400 and err.value.message == (
        f"inputs[0].parameters.binary_data_size: {count} BYTES elements declared, but the 5 bytes given hold at "
        "most 1 (each takes a 4-byte length)")


def test_a_fixed_size_shape_that_overflows_int64_is_400() -> None:
    doc = {"inputs": [{"name": "image", "shape": [2**62, 8, 8], "datatype": "UINT8",
                       "parameters": {"binary_data_size": 0}}]}
    header = json_body(doc)
    with pytest.raises(ProtocolError) as err:
        decode_request(header, DIGITS, OUTPUTS, header_length=str(len(header)))
    assert err.value.status == 400
    assert err.value.message.startswith("inputs[0].parameters.binary_data_size: 0 bytes do not hold shape "
                                        "[4611686018427387904, 8, 8] of UINT8 (295147905179352825856 bytes)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "request body: JSON nested too deeply"),
        (b'{"parameters": {"timeout": 1' + b"0" * 400 + b'}, "inputs": []}',
         "parameters.timeout: expected microseconds, an integer from 0 to 2**64-1"),
        (b'{"parameters": {"timeout": 1e400}, "inputs": []}', "parameters.timeout: expected microseconds"),
        (b'{"parameters": {"timeout": 18446744073709551616}, "inputs": []}', "parameters.timeout: expected"),
    ],
    ids=["deep", "timeout-10**400", "timeout-inf", "timeout-2**64"],
)
def test_hostile_envelopes_are_400(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_request(body, INPUTS, OUTPUTS)
    assert err.value.status == 400 and err.value.message.startswith(message), err.value.message


def test_the_largest_timeout_is_accepted() -> None:
    doc = {**json.loads(json_body(base_doc())), "parameters": {"timeout": 2**64 - 1}}
    assert decode_request(json_body(doc), INPUTS, OUTPUTS).timeout_s == pytest.approx(2**64 / 1e6)


def test_floats_beyond_float32_become_infinities_for_the_non_finite_rule() -> None:
    spec = [TensorSpec("x", "float32", (2,))]
    body = json_body({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1e39, -1e39]}]})
    np.testing.assert_array_equal(decode_request(body, spec, OUTPUTS).inputs["x"], [[np.inf, -np.inf]])
    body = json_body({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [10**400, 0]}]})
    with pytest.raises(ProtocolError, match=r"inputs\[0\].data: a value is out of range for FP32"):
        decode_request(body, spec, OUTPUTS)


def test_json_text_holding_more_than_any_request_could_is_refused_before_parsing() -> None:
    limits = ServingConfig(max_rows=16, max_elements=16 * 7)  # INPUTS: [2, 3] lists of 1 + 2 per row, text 1 + 1
    padding = {"name": "x" * 70_000}  # a large body: the scan only runs from 64 KiB
    for spam, key in ((b"[]," * 30_000, "(serving.max_rows) can need"),
                      (b"0," * 40_000, "(serving.max_rows, serving.max_elements) can need")):
        body = json_body({"outputs": [padding]})[:-1] + b', "spam": [' + spam + b"0]}"
        with pytest.raises(ProtocolError) as err:
            decode_request(body, INPUTS, OUTPUTS, limits=limits)
        assert err.value.status == 413 and key in err.value.message, err.value.message
    rows = [[[int(v) for v in r] for r in np.ones((2, 3))] for _ in range(16)]
    text = json.dumps({"k": [[1], [2]], "t": "a [row] of text with a few {brackets}, as text has; " * 100})
    doc = {"inputs": [{"name": "image", "shape": [16, 2, 3], "datatype": "UINT8", "data": rows},
                      {"name": "text", "shape": [16, 1], "datatype": "BYTES", "data": [[text]] * 16}]}
    body = json_body(doc)
    assert len(body) > 64 << 10
    assert decode_request(body, INPUTS, OUTPUTS, limits=limits).rows == 16, "brackets in text are allowed for"
    rows_only = [TensorSpec("rows", "bytes", ())]  # fixed shapes: at most max_rows elements, whatever max_elements
    strings = json_body({"outputs": [padding]})[:-1] + b', "spam": [' + b'"ab",' * 20_000 + b'"x"]}'
    with pytest.raises(ProtocolError, match=r"JSON values, more than the \d+ a request of at most 16 elements"):
        decode_request(strings, rows_only, OUTPUTS, limits=ServingConfig(max_rows=16))


# -- the fast JSON codec against the standard library's ----------------------


@pytest.mark.parametrize("datatype", [*DATATYPES, "BYTES"])
@pytest.mark.parametrize("nested", [False, True])
def test_decoding_with_orjson_gives_the_arrays_the_stdlib_gave(
    datatype: str, nested: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    dtype = numpy_for_datatype(datatype)
    if datatype == "BYTES":
        data: Any = ["", "a", "\u00e9t\u00e9", "x" * 30, "0", "null"]
    elif dtype.kind == "b":
        data = [True, False, True, True, False, False]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        data = [int(info.min), int(info.max), 0, 1, int(info.max) - 1, int(rng.integers(0, min(int(info.max), 2**62)))]
    else:
        data = [0.1, -2.5e-8, float(np.finfo(dtype).max), 1e-45, 3.0, float(rng.standard_normal())]
    shape = [2, 3]
    spec = [TensorSpec("x", "bytes" if datatype == "BYTES" else dtype.name, (3,))]
    doc = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                       "data": [data[:3], data[3:]] if nested else data}]}
    body = json_body(doc)
    fast = decode_request(body, spec, OUTPUTS[:1])
    monkeypatch.setattr("infc_runtime._json.orjson", None)
    slow = decode_request(body, spec, OUTPUTS[:1])
    assert fast.inputs["x"].dtype == slow.inputs["x"].dtype
    np.testing.assert_array_equal(fast.inputs["x"], slow.inputs["x"])


@pytest.mark.parametrize(
    "text",
    [
        b"[1.0, NaN, 2.0]",
        b"[1.0, Infinity, 2.0]",
        b"[1e999, 0, 0]",
        b"[18446744073709551616, 0, 0]",
        b"[1, 2, -9223372036854775809]",
        b"[1, true, 2]",
        b"[1, \"2\", 3]",
    ],
)
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "UINT64"])
def test_values_orjson_refuses_get_the_stdlib_answer(
    text: bytes, datatype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = [TensorSpec("x", numpy_for_datatype(datatype).name, (3,))]
    head = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "' + datatype.encode()
    body = head + b'", "data": ' + text + b"}]}"

    def outcome() -> Any:
        try:
            return decode_request(body, spec, OUTPUTS[:1]).inputs["x"].tolist()
        except ProtocolError as exc:
            return exc.status, exc.message

    fast = outcome()
    monkeypatch.setattr("infc_runtime._json.orjson", None)
    slow = outcome()
    assert repr(fast) == repr(slow)  # repr: NaN compares unequal to itself


def test_responses_are_the_same_json_with_either_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    request = InferRequest({}, [RequestedOutput("score", False), RequestedOutput("label", False)], 2, id="r\u00e9")
    result = {"score": np.array([[0.1, 1e-30], [3.4e38, -0.0]], dtype=np.float32),
              "label": np.array([b"a", "\u00e9".encode()], dtype=object)}
    fast = encode_response(request, result, OUTPUTS, model_name="m", model_version="1")
    monkeypatch.setattr("infc_runtime._json.orjson", None)
    slow = encode_response(request, result, OUTPUTS, model_name="m", model_version="1")
    assert json.loads(fast.body) == json.loads(slow.body)
    assert fast.header_length is slow.header_length is None
