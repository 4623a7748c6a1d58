import assert from "node:assert/strict";
import { HTTPException } from "hono/http-exception";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { errorResponse, HttpError, resultName, statusOf } from "./errors.ts";

Deno.test("statusOf() maps result codes to HTTP statuses", () => {
  const expected: [number, number][] = [
    [ResultCode.NO_VDI, 404],
    [ResultCode.NO_TAG, 404],
    [ResultCode.VDI_EXIST, 409],
    [ResultCode.INVALID_PARMS, 400],
    [ResultCode.READONLY, 409],
    [ResultCode.VDI_LOCKED, 409],
    [ResultCode.WAIT_FOR_FORMAT, 503],
    [ResultCode.NETWORK_ERROR, 502],
    [ResultCode.NO_SPACE, 507],
    [ResultCode.EIO, 500],
    [ResultCode.UNKNOWN, 500],
    [0x77, 500],
  ];
  for (const [code, status] of expected) assert.equal(statusOf(code), status, resultName(code));
});

Deno.test("resultName() names every Sheepdog result code", () => {
  for (const [name, code] of Object.entries(ResultCode)) assert.equal(resultName(code), name);
  assert.equal(resultName(0x77), "UNKNOWN_0x77");
});

Deno.test("errorResponse() builds {error, code, result} bodies", () => {
  assert.deepEqual(
    errorResponse(new SheepdogError(ResultCode.NO_VDI, "Cannot find VDI 'x': no such VDI")),
    {
      status: 404,
      body: { error: "Cannot find VDI 'x': no such VDI", code: "NO_VDI", result: 8 },
      internal: false,
    },
  );
  assert.deepEqual(errorResponse(new HttpError(401, "UNAUTHORIZED", "no")), {
    status: 401,
    body: { error: "no", code: "UNAUTHORIZED" },
    internal: false,
  });
  assert.equal(
    errorResponse(new HTTPException(413, { message: "big" })).body.code,
    "PAYLOAD_TOO_LARGE",
  );
  assert.deepEqual(errorResponse("weird"), {
    status: 500,
    body: {
      error: "Internal error: the sheep's log has the details",
      code: "SYSTEM_ERROR",
      result: 6,
    },
    logText: "weird",
    internal: true,
  });
  assert.equal(errorResponse(new SheepdogError(ResultCode.EIO)).internal, true);
});
