/**
 * OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}` with its status codes
 * (400 invalid request, 401 bad key, 404 unknown object, 409/400 wrong state, 413 too large, 500 ours).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = status === 401
      ? "invalid_request_error"
      : status >= 500
        ? "server_error"
        : "invalid_request_error",
  ) {
    super(message);
  }

  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const notFound = (what: string, id: string, param: string | null = null) =>
  new ApiError(404, `No such ${what}: '${id}'`, param, `${what.replaceAll(" ", "_")}_not_found`);

export const badRequest = (message: string, param: string | null = null, code: string | null = "invalid_value") =>
  new ApiError(400, message, param, code);
