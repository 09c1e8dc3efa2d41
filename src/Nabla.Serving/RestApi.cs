using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Nabla.Serving;

/// <summary>
/// The Open Inference Protocol REST API (KServe v2) with Triton's model_repository, model_configuration, statistics
/// and binary_tensor_data extensions. Every failure answers an HTTP error status with <c>{"error": "..."}</c>.
/// Handlers write JSON with <see cref="Utf8JsonWriter"/>: no reflection, so the server stays trimmable.
/// </summary>
public static class RestApi
{
    /// <summary>Header of the binary tensor data extension: byte length of the JSON part of a body.</summary>
    public const string HeaderLengthName = "Inference-Header-Content-Length";

    /// <summary>JSON nesting allowed in a request (Triton's HTTP_MAX_JSON_NESTING_DEPTH).</summary>
    public const int MaxJsonDepth = 100;

    public static readonly IReadOnlyList<string> Extensions =
        ["binary_tensor_data", "model_repository", "model_configuration", "statistics"];

    /// <summary>Maps every REST route under <c>/v2</c>.</summary>
    public static IEndpointRouteBuilder MapNablaRest(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v2/health/live", ctx => Json(ctx, 200, w => w.WriteBoolean("live", true)));
        app.MapGet("/v2/health/ready", ctx =>
        {
            var state = ctx.RequestServices.GetRequiredService<ServerState>();
            return state.Ready
                ? Json(ctx, 200, w => w.WriteBoolean("ready", true))
                : Json(ctx, 503, w => { w.WriteBoolean("ready", false); w.WriteString("error", state.NotReadyReason); }, retryAfter: true);
        });
        app.MapGet("/v2", ServerMetadata);
        app.MapGet("/v2/models/stats", ctx => Stats(ctx, null, null));
        foreach (var prefix in new[] { "/v2/models/{model}", "/v2/models/{model}/versions/{version}" })
        {
            app.MapGet(prefix, ModelMetadata);
            app.MapGet(prefix + "/ready", ModelReady);
            app.MapGet(prefix + "/config", ModelConfigHandler);
            app.MapGet(prefix + "/stats", ctx => Stats(ctx, Route(ctx, "model"), Route(ctx, "version")));
            app.MapPost(prefix + "/infer", Infer);
        }
        app.MapGet("/metrics", Metrics);
        app.MapPost("/v2/repository/index", RepositoryIndex);
        app.MapPost("/v2/repository/models/{model}/load", ctx => LoadOrUnload(ctx, load: true));
        app.MapPost("/v2/repository/models/{model}/unload", ctx => LoadOrUnload(ctx, load: false));
        return app;
    }

    /// <summary>
    /// Middleware for the REST side: turns <see cref="ServingException"/>, Kestrel's body-too-large rejection and
    /// unexpected exceptions into <c>{"error"}</c> replies, and gives bodiless 404/405 replies an error body.
    /// </summary>
    public static IApplicationBuilder UseNablaRestErrors(this IApplicationBuilder app) => app.Use(async (ctx, next) =>
    {
        if (IsGrpc(ctx)) { await next(ctx); return; }
        try
        {
            await next(ctx);
            if (!ctx.Response.HasStarted && ctx.Response.StatusCode >= 400 && ctx.Response.ContentLength is null)
            {
                int code = ctx.Response.StatusCode;
                var msg = code switch
                {
                    404 => $"no such endpoint: {ctx.Request.Method} {WireTypes.Clip(ctx.Request.Path.Value ?? "")}",
                    405 => $"method {ctx.Request.Method} is not allowed on {WireTypes.Clip(ctx.Request.Path.Value ?? "")}",
                    _ => $"HTTP {code}",
                };
                await Json(ctx, code, w => w.WriteString("error", msg));
            }
        }
        catch (ServingException e) when (!ctx.Response.HasStarted)
        {
            await Json(ctx, e.HttpStatus, w => w.WriteString("error", e.Message), retryAfter: e.Kind == ServingErrorKind.Unavailable);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (!ctx.Response.HasStarted)
        {
            await Json(ctx, e.StatusCode, w => w.WriteString("error", e.StatusCode == 413 ? $"request body is larger than the limit: {e.Message}" : e.Message));
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // NOTE: the client went away; there is nobody to answer.
        }
        catch (Exception e) when (!ctx.Response.HasStarted)
        {
            ctx.RequestServices.GetService<ILoggerFactory>()?.CreateLogger("Nabla.Serving").LogError(e, "unexpected failure of {Path}", ctx.Request.Path.Value);
            await Json(ctx, 500, w => w.WriteString("error", $"internal error: {e.GetType().Name}: {e.Message}"));
        }
    });

    internal static bool IsGrpc(HttpContext ctx) =>
        ctx.Request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) == true;

    static string? Route(HttpContext ctx, string key) => ctx.Request.RouteValues.TryGetValue(key, out var v) ? v as string : null;

    static Task Json(HttpContext ctx, int status, Action<Utf8JsonWriter> members, bool retryAfter = false) =>
        WriteJson(ctx, status, w => { w.WriteStartObject(); members(w); w.WriteEndObject(); }, retryAfter);

    static async Task WriteJson(HttpContext ctx, int status, Action<Utf8JsonWriter> write, bool retryAfter = false)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer)) write(w);
        ctx.Response.StatusCode = status;
        if (retryAfter) ctx.Response.Headers.RetryAfter = "1";
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = buffer.WrittenCount;
        await ctx.Response.Body.WriteAsync(buffer.WrittenMemory, ctx.RequestAborted);
    }

    static (ModelRepository repo, ServerState state, ServingOptions options) Services(HttpContext ctx) =>
        (ctx.RequestServices.GetRequiredService<ModelRepository>(), ctx.RequestServices.GetRequiredService<ServerState>(),
         ctx.RequestServices.GetRequiredService<ServingOptions>());

    static Task ServerMetadata(HttpContext ctx)
    {
        var (_, _, options) = Services(ctx);
        return Json(ctx, 200, w =>
        {
            w.WriteString("name", options.ServerName);
            w.WriteString("version", typeof(RestApi).Assembly.GetName().Version?.ToString(3) ?? "0");
            w.WriteStartArray("extensions");
            foreach (var e in Extensions) w.WriteStringValue(e);
            w.WriteEndArray();
        });
    }

    static Task ModelMetadata(HttpContext ctx)
    {
        var (repo, _, _) = Services(ctx);
        string model = Route(ctx, "model")!, version = Route(ctx, "version") ?? "";
        var config = repo.ConfigOf(model, version);
        var versions = version.Length > 0 ? [version] : repo.ReadyVersions(model).Select(v => v.ToString(CultureInfo.InvariantCulture)).ToList();
        return Json(ctx, 200, w =>
        {
            w.WriteString("name", model);
            w.WriteStartArray("versions");
            foreach (var v in versions) w.WriteStringValue(v);
            w.WriteEndArray();
            w.WriteString("platform", config.Platform);
            WriteTensorMetadata(w, "inputs", config, config.Inputs);
            WriteTensorMetadata(w, "outputs", config, config.Outputs);
        });
    }

    static void WriteTensorMetadata(Utf8JsonWriter w, string key, ModelConfig config, IReadOnlyList<TensorSpec> list)
    {
        w.WriteStartArray(key);
        foreach (var t in list)
        {
            w.WriteStartObject();
            w.WriteString("name", t.Name);
            w.WriteString("datatype", t.Datatype);
            w.WriteStartArray("shape");
            foreach (var d in config.ExposedShape(t)) w.WriteNumberValue(d);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    static Task ModelReady(HttpContext ctx)
    {
        var (repo, _, _) = Services(ctx);
        var model = Route(ctx, "model")!;
        var (ready, reason) = repo.IsReady(model, Route(ctx, "version"));
        return Json(ctx, ready ? 200 : 503, w =>
        {
            w.WriteString("name", model);
            w.WriteBoolean("ready", ready);
            if (!ready) w.WriteString("error", $"model '{model}' is not ready: {reason}");
        }, retryAfter: !ready);
    }

    static Task ModelConfigHandler(HttpContext ctx)
    {
        var (repo, _, _) = Services(ctx);
        var config = repo.ConfigOf(Route(ctx, "model")!, Route(ctx, "version"));
        return WriteJson(ctx, 200, config.WriteJson);
    }

    static Task Stats(HttpContext ctx, string? model, string? version)
    {
        var (repo, _, _) = Services(ctx);
        var list = repo.LoadedVersions(model, version);
        return Json(ctx, 200, w =>
        {
            w.WriteStartArray("model_stats");
            foreach (var mv in list) WriteStats(w, mv);
            w.WriteEndArray();
        });
    }

    static void WriteStats(Utf8JsonWriter w, ModelVersion mv)
    {
        var s = mv.Stats;
        w.WriteStartObject();
        w.WriteString("name", mv.ModelName);
        w.WriteString("version", mv.VersionString);
        w.WriteNumber("last_inference", Interlocked.Read(ref s.LastInferenceMs));
        w.WriteNumber("inference_count", Interlocked.Read(ref s.InferenceCount));
        w.WriteNumber("execution_count", Interlocked.Read(ref s.ExecutionCount));
        w.WriteStartObject("inference_stats");
        Duration(w, "success", ref s.SuccessCount, ref s.SuccessNs);
        Duration(w, "fail", ref s.FailCount, ref s.FailNs);
        Duration(w, "queue", ref s.QueueCount, ref s.QueueNs);
        Duration(w, "compute_input", ref s.InputCount, ref s.InputNs);
        Duration(w, "compute_infer", ref s.InferCount, ref s.InferNs);
        Duration(w, "compute_output", ref s.OutputCount, ref s.OutputNs);
        long zero = 0, zeroNs = 0;
        Duration(w, "cache_hit", ref zero, ref zeroNs);
        Duration(w, "cache_miss", ref zero, ref zeroNs);
        w.WriteEndObject();
        w.WriteStartArray("batch_stats");
        foreach (var (size, b) in s.Batches.OrderBy(kv => kv.Key))
        {
            w.WriteStartObject();
            w.WriteNumber("batch_size", size);
            long count = Interlocked.Read(ref b.Count);
            Duration(w, "compute_input", ref count, ref b.InputNs);
            Duration(w, "compute_infer", ref count, ref b.InferNs);
            Duration(w, "compute_output", ref count, ref b.OutputNs);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("memory_usage");
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void Duration(Utf8JsonWriter w, string name, ref long count, ref long ns)
    {
        w.WriteStartObject(name);
        w.WriteNumber("count", Interlocked.Read(ref count));
        w.WriteNumber("ns", Interlocked.Read(ref ns));
        w.WriteEndObject();
    }

    static async Task Metrics(HttpContext ctx)
    {
        var (repo, _, _) = Services(ctx);
        var text = System.Text.Encoding.UTF8.GetBytes(PrometheusMetrics.Render(repo.LoadedVersions(null, null)));
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = PrometheusMetrics.ContentType;
        ctx.Response.ContentLength = text.Length;
        await ctx.Response.Body.WriteAsync(text, ctx.RequestAborted);
    }

    /// <summary>The whole body, read under the configured limit: a declared length over it is refused before reading.</summary>
    static async Task<byte[]> ReadBody(HttpContext ctx, ServingOptions options) => (await ReadBody(ctx, options, pool: false)).Array;

    /// <summary>
    /// The whole body in <c>Array[..Length]</c>. With <paramref name="pool"/> a body of announced length goes into an array
    /// rented from <see cref="ArrayPool{T}.Shared"/> (<c>Pooled</c>), which the caller returns when done with it.
    /// </summary>
    static async Task<(byte[] Array, int Length, bool Pooled)> ReadBody(HttpContext ctx, ServingOptions options, bool pool)
    {
        if (ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = options.MaxRequestBytes;
        if (ctx.Request.ContentLength is long declared && declared > options.MaxRequestBytes)
            throw new ServingException(ServingErrorKind.PayloadTooLarge, $"request body of {declared} bytes is larger than the limit of {options.MaxRequestBytes} bytes");
        if (ctx.Request.ContentLength is long length)
        {
            // NOTE: the common case: read straight into an array of the announced size (one copy, no MemoryStream).
            var buffer = pool ? ArrayPool<byte>.Shared.Rent((int)length) : GC.AllocateUninitializedArray<byte>((int)length);
            try
            {
                int read;
                try { read = await ctx.Request.Body.ReadAtLeastAsync(buffer.AsMemory(0, (int)length), (int)length, throwOnEndOfStream: false, ctx.RequestAborted); }
                catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413) { throw TooLarge(); }
                if (read < length) throw ServingException.Invalid($"the body ended after {read} of the {length} bytes its Content-Length announced");
                return (buffer, (int)length, pool);
            }
            catch when (pool)
            {
                ArrayPool<byte>.Shared.Return(buffer);
                throw;
            }
        }
        using var ms = new MemoryStream();
        try { await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted); }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413) { throw TooLarge(); }
        if (ms.Length > options.MaxRequestBytes) throw TooLarge();
        var all = ms.ToArray();
        return (all, all.Length, false);

        ServingException TooLarge() => new(ServingErrorKind.PayloadTooLarge, $"request body is larger than the limit of {options.MaxRequestBytes} bytes");
    }

    static JsonDocument ParseJson(ReadOnlyMemory<byte> json, string what)
    {
        // NOTE: JsonDocument checks UTF-8 only when a string is read (GetString throws InvalidOperationException, a 500),
        // so the whole JSON text is validated up front (RFC 8259 requires UTF-8).
        if (!System.Text.Unicode.Utf8.IsValid(json.Span)) throw ServingException.Invalid($"malformed JSON in {what}: the text is not valid UTF-8");
        try { return JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = MaxJsonDepth }); }
        catch (JsonException e) { throw ServingException.Invalid($"malformed JSON in {what}: {e.Message}"); }
        catch (ArgumentException e) { throw ServingException.Invalid($"malformed JSON in {what}: {e.Message}"); }
    }

    static async Task<JsonDocument?> OptionalBody(HttpContext ctx, ServingOptions options, string what)
    {
        var body = await ReadBody(ctx, options);
        if (body.AsSpan().Trim(" \t\r\n"u8).Length == 0) return null;
        var doc = ParseJson(body, what);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw ServingException.Invalid($"{what} must be a JSON object");
        }
        return doc;
    }

    static async Task RepositoryIndex(HttpContext ctx)
    {
        var (repo, _, options) = Services(ctx);
        bool readyOnly = false;
        using (var doc = await OptionalBody(ctx, options, "the index request"))
        {
            if (doc is not null && doc.RootElement.TryGetProperty("ready", out var r))
                readyOnly = r.ValueKind switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    _ => throw ServingException.Invalid("'ready' must be a boolean"),
                };
        }
        var rows = repo.Index(readyOnly);
        await WriteJson(ctx, 200, w =>
        {
            w.WriteStartArray();
            foreach (var row in rows)
            {
                w.WriteStartObject();
                w.WriteString("name", row.Name);
                if (row.Version is not null) w.WriteString("version", row.Version);
                w.WriteString("state", row.StateName);
                w.WriteString("reason", row.Reason);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        });
    }

    static async Task LoadOrUnload(HttpContext ctx, bool load)
    {
        var (repo, _, options) = Services(ctx);
        var model = Route(ctx, "model")!;
        string? config = null;
        using (var doc = await OptionalBody(ctx, options, load ? "the load request" : "the unload request"))
        {
            if (doc is not null && doc.RootElement.TryGetProperty("parameters", out var ps))
            {
                if (ps.ValueKind != JsonValueKind.Object) throw ServingException.Invalid("'parameters' must be an object");
                foreach (var p in ps.EnumerateObject())
                {
                    if (load && p.Name == "config")
                        config = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : throw ServingException.Invalid("parameter 'config' must be a JSON string");
                    else if (load && p.Name.StartsWith("file:", StringComparison.Ordinal))
                        throw new ServingException(ServingErrorKind.Unimplemented, "loading model files sent in the request ('file:' parameters) is not supported");
                    else if (!load && p.Name == "unload_dependents") { }
                    else throw ServingException.Invalid($"unknown parameter '{WireTypes.Clip(p.Name)}'");
                }
            }
        }
        if (load) await repo.LoadAsync(model, config, ctx.RequestAborted);
        else await repo.UnloadAsync(model, ctx.RequestAborted);
        await Json(ctx, 200, w => { w.WriteString("name", model); w.WriteBoolean(load ? "load" : "unload", true); });
    }

    // ---- inference ----

    static async Task Infer(HttpContext ctx)
    {
        var (repo, _, options) = Services(ctx);
        var engine = ctx.RequestServices.GetRequiredService<InferenceEngine>();
        string model = Route(ctx, "model")!, version = Route(ctx, "version") ?? "";
        // The body's array is pooled and returned once the response is written (the tensors decoded from it are copies):
        // a 1×3×224×224 image is 600 KB of fresh memory per request otherwise.
        var (array, length, pooled) = await ReadBody(ctx, options, pool: true);
        try { await Infer(ctx, engine, repo, model, version, array.AsMemory(0, length)); }
        finally { if (pooled) ArrayPool<byte>.Shared.Return(array, clearArray: true); }   // no request's data lingers in the pool
    }

    static async Task Infer(HttpContext ctx, InferenceEngine engine, ModelRepository repo, string model, string version, Memory<byte> body)
    {
        int jsonLength = body.Length;
        bool hasHeader = ctx.Request.Headers.TryGetValue(HeaderLengthName, out var hv);
        if (hasHeader)
        {
            if (hv.Count != 1 || !int.TryParse(hv[0], NumberStyles.None, CultureInfo.InvariantCulture, out jsonLength) || jsonLength > body.Length)
                throw ServingException.Invalid($"{HeaderLengthName} '{WireTypes.Clip(hv.ToString())}' must be a non-negative integer no larger than the body ({body.Length} bytes)");
        }
        InferResult result;
        string? id = null;
        if (hasHeader && jsonLength == 0)
        {
            result = await engine.InferAsync(model, version, [RawInput(repo.Resolve(model, version), body)], null, binaryByDefault: true, ctx.RequestAborted);
        }
        else
        {
            using var doc = ParseJson(body[..jsonLength], "the inference request");
            var binary = body[jsonLength..];
            var (inputs, outputs, reqId, binaryDefault) = ParseInferRequest(doc.RootElement, binary);
            id = reqId;
            result = await engine.InferAsync(model, version, inputs, outputs, binaryDefault, ctx.RequestAborted);
        }
        try { await WriteInferResponse(ctx, result, id); }
        finally { result.Dispose(); }
    }

    /// <summary>A body of bare bytes (header length 0) for a model with one input: batch 1, at most one variable dim.</summary>
    static InferInput RawInput(ModelVersion mv, ReadOnlyMemory<byte> body)
    {
        var config = mv.Config;
        if (config.Inputs.Count != 1) throw ServingException.Invalid($"a raw binary request needs a model with exactly one input; '{mv.ModelName}' has {config.Inputs.Count}");
        var spec = config.Inputs[0];
        if (spec.AnyRank) throw ServingException.Invalid($"input '{spec.Name}' has no declared shape, so a raw binary request cannot be shaped");
        if (spec.Datatype == WireTypes.Bytes)
            throw ServingException.Invalid($"input '{spec.Name}' is BYTES, whose elements have no fixed size, so a raw binary request cannot be shaped; send a JSON header with binary_data_size");
        var dtype = WireTypes.ToDType(spec.Datatype)!.Value;
        var shape = config.ExposedShape(spec).ToArray();
        if (config.MaxBatchSize > 0) shape[0] = 1;
        int variable = shape.Count(d => d == -1);
        if (variable > 1) throw ServingException.Invalid($"input '{spec.Name}' has {variable} variable dimensions; a raw binary request allows at most one");
        long fixedElems = shape.Where(d => d != -1).Aggregate(1L, (a, d) => a * d);
        long elems = body.Length / dtype.ElementSize();
        if (body.Length % dtype.ElementSize() != 0 || (variable == 0 ? elems != fixedElems : fixedElems == 0 || elems % fixedElems != 0))
            throw ServingException.Invalid($"a raw binary body of {body.Length} bytes does not fit input '{spec.Name}' of shape [{string.Join(", ", shape)}] {spec.Datatype}");
        if (variable == 1) shape[Array.IndexOf(shape, -1L)] = elems / fixedElems;
        return new InferInput(spec.Name, spec.Datatype, shape, (dt, dims, what) => TensorCodec.FromRaw(body.Span, dt, dims, what));
    }

    static (List<InferInput>, List<RequestedOutput>?, string?, bool) ParseInferRequest(JsonElement root, ReadOnlyMemory<byte> binary)
    {
        if (root.ValueKind != JsonValueKind.Object) throw ServingException.Invalid("the inference request must be a JSON object");
        string? id = null;
        if (root.TryGetProperty("id", out var idEl))
            id = idEl.ValueKind == JsonValueKind.String ? idEl.GetString() : throw ServingException.Invalid("'id' must be a string");
        bool binaryDefault = false;
        if (root.TryGetProperty("parameters", out var ps))
        {
            if (ps.ValueKind != JsonValueKind.Object) throw ServingException.Invalid("'parameters' must be an object");
            if (ps.TryGetProperty("binary_data_output", out var bdo)) binaryDefault = Bool(bdo, "parameter 'binary_data_output'");
        }
        if (!root.TryGetProperty("inputs", out var inputsEl) || inputsEl.ValueKind != JsonValueKind.Array)
            throw ServingException.Invalid("the inference request needs an 'inputs' array");
        var inputs = new List<InferInput>();
        int offset = 0;
        foreach (var el in inputsEl.EnumerateArray())
        {
            if (el.ValueKind != JsonValueKind.Object) throw ServingException.Invalid("each input must be a JSON object");
            var name = String(el, "name", "an input");
            var what = $"input '{WireTypes.Clip(name)}'";
            var datatype = String(el, "datatype", what);
            if (!el.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
                throw ServingException.Invalid($"{what} needs a 'shape' array");
            var shape = new List<long>();
            foreach (var d in shapeEl.EnumerateArray())
                shape.Add(d.ValueKind == JsonValueKind.Number && d.TryGetInt64(out var v) ? v : throw ServingException.Invalid($"{what}: shape entries must be integers"));
            long? binarySize = null;
            if (el.TryGetProperty("parameters", out var ips))
            {
                if (ips.ValueKind != JsonValueKind.Object) throw ServingException.Invalid($"{what}: 'parameters' must be an object");
                if (ips.TryGetProperty("binary_data_size", out var bs))
                    binarySize = bs.ValueKind == JsonValueKind.Number && bs.TryGetInt64(out var b) && b >= 0 ? b
                        : throw ServingException.Invalid($"{what}: binary_data_size must be a non-negative integer");
            }
            if (binarySize is long size)
            {
                if (el.TryGetProperty("data", out _)) throw ServingException.Invalid($"{what} has both 'data' and binary_data_size");
                if (size > binary.Length - offset)
                    throw ServingException.Invalid($"{what}: binary_data_size {size} runs past the end of the body ({binary.Length - offset} bytes left)");
                var slice = binary.Slice(offset, (int)size);
                offset += (int)size;
                inputs.Add(new InferInput(name, datatype, shape, (dt, dims, w) => TensorCodec.FromRaw(slice.Span, dt, dims, w)));
            }
            else
            {
                if (!el.TryGetProperty("data", out var data)) throw ServingException.Invalid($"{what} has no 'data'");
                inputs.Add(new InferInput(name, datatype, shape, (dt, dims, w) => TensorCodec.FromJson(data, dt, dims, w)));
            }
        }
        if (offset != binary.Length)
            throw ServingException.Invalid($"the body holds {binary.Length} bytes after the JSON header, but the inputs' binary_data_size add up to {offset}");
        List<RequestedOutput>? outputs = null;
        if (root.TryGetProperty("outputs", out var outsEl))
        {
            if (outsEl.ValueKind != JsonValueKind.Array) throw ServingException.Invalid("'outputs' must be an array");
            outputs = [];
            foreach (var o in outsEl.EnumerateArray())
            {
                if (o.ValueKind != JsonValueKind.Object) throw ServingException.Invalid("each requested output must be a JSON object");
                var name = String(o, "name", "a requested output");
                bool? bin = null;
                if (o.TryGetProperty("parameters", out var ops))
                {
                    if (ops.ValueKind != JsonValueKind.Object) throw ServingException.Invalid($"output '{WireTypes.Clip(name)}': 'parameters' must be an object");
                    if (ops.TryGetProperty("binary_data", out var bd)) bin = Bool(bd, $"output '{WireTypes.Clip(name)}': parameter 'binary_data'");
                    if (ops.TryGetProperty("classification", out _))
                        throw new ServingException(ServingErrorKind.Unimplemented, "the classification extension is not supported");
                }
                outputs.Add(new RequestedOutput(name, bin));
            }
        }
        return (inputs, outputs, id, binaryDefault);
    }

    static string String(JsonElement o, string key, string what) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
            : throw ServingException.Invalid($"{what} needs a string '{key}'");

    static bool Bool(JsonElement e, string what) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw ServingException.Invalid($"{what} must be a boolean"),
    };

    static async Task WriteInferResponse(HttpContext ctx, InferResult result, string? id)
    {
        var raw = result.Outputs.Select(o => o.Binary ? TensorCodec.ToRaw(o.Value) : null).ToList();
        var header = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            w.WriteString("model_name", result.Model.ModelName);
            w.WriteString("model_version", result.Model.VersionString);
            if (id is not null) w.WriteString("id", id);
            w.WriteStartArray("outputs");
            for (int i = 0; i < result.Outputs.Count; i++)
            {
                var o = result.Outputs[i];
                w.WriteStartObject();
                w.WriteString("name", o.Name);
                w.WriteString("datatype", o.Datatype);
                w.WriteStartArray("shape");
                foreach (var d in o.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                if (raw[i] is { } bytes)
                {
                    w.WriteStartObject("parameters");
                    w.WriteNumber("binary_data_size", bytes.Length);
                    w.WriteEndObject();
                }
                else
                {
                    w.WritePropertyName("data");
                    TensorCodec.WriteJson(w, o.Value, $"output '{o.Name}'");
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        ctx.Response.StatusCode = 200;
        long binaryLength = raw.Sum(r => (long)(r?.Length ?? 0));
        if (raw.Any(r => r is not null))
        {
            ctx.Response.ContentType = "application/octet-stream";
            ctx.Response.Headers[HeaderLengthName] = header.WrittenCount.ToString(CultureInfo.InvariantCulture);
        }
        else ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = header.WrittenCount + binaryLength;
        // NOTE: header and tensors go into Kestrel's pipe and leave with one flush (one send for a small reply).
        var writer = ctx.Response.BodyWriter;
        writer.Write(header.WrittenSpan);
        foreach (var r in raw)
            if (r is not null) writer.Write(r);
        await writer.FlushAsync(ctx.RequestAborted);
    }
}
