using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Nabla.Serving.Grpc;

namespace Nabla.Serving;

/// <summary>
/// <c>inference.GRPCInferenceService</c>: the same calls as the REST API, with failures as gRPC status codes
/// (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ...). Outputs always travel in <c>raw_output_contents</c>, as Triton's do.
/// </summary>
public sealed class GrpcInferenceServiceImpl(ModelRepository repository, ServerState state, InferenceEngine engine, ServingOptions options)
    : GRPCInferenceService.GRPCInferenceServiceBase
{
    static async Task<T> Guard<T>(Func<Task<T>> call)
    {
        try { return await call().ConfigureAwait(false); }
        catch (ServingException e) { throw new RpcException(new Status(e.GrpcStatus, e.Message)); }
    }

    static Task<T> Guard<T>(Func<T> call) => Guard(() => Task.FromResult(call()));

    public override Task<ServerLiveResponse> ServerLive(ServerLiveRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerLiveResponse { Live = true });

    public override Task<ServerReadyResponse> ServerReady(ServerReadyRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerReadyResponse { Ready = state.Ready });

    public override Task<ModelReadyResponse> ModelReady(ModelReadyRequest request, ServerCallContext context) =>
        Guard(() => new ModelReadyResponse { Ready = repository.IsReady(request.Name, request.Version).Ready });

    public override Task<ServerMetadataResponse> ServerMetadata(ServerMetadataRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerMetadataResponse
        {
            Name = options.ServerName,
            Version = typeof(RestApi).Assembly.GetName().Version?.ToString(3) ?? "0",
            Extensions = { RestApi.Extensions },
        });

    public override Task<ModelMetadataResponse> ModelMetadata(ModelMetadataRequest request, ServerCallContext context) => Guard(() =>
    {
        var config = repository.ConfigOf(request.Name, request.Version);
        var r = new ModelMetadataResponse { Name = request.Name, Platform = config.Platform };
        if (request.Version.Length > 0) r.Versions.Add(request.Version);
        else r.Versions.AddRange(repository.ReadyVersions(request.Name).Select(v => v.ToString(CultureInfo.InvariantCulture)));
        foreach (var t in config.Inputs) r.Inputs.Add(new ModelMetadataResponse.Types.TensorMetadata { Name = t.Name, Datatype = t.Datatype, Shape = { config.ExposedShape(t) } });
        foreach (var t in config.Outputs) r.Outputs.Add(new ModelMetadataResponse.Types.TensorMetadata { Name = t.Name, Datatype = t.Datatype, Shape = { config.ExposedShape(t) } });
        return r;
    });

    public override Task<ModelInferResponse> ModelInfer(ModelInferRequest request, ServerCallContext context) => Guard(async () =>
    {
        bool raw = request.RawInputContents.Count > 0;
        if (raw && request.RawInputContents.Count != request.Inputs.Count)
            throw ServingException.Invalid($"raw_input_contents has {request.RawInputContents.Count} entries for {request.Inputs.Count} inputs; it needs one per input");
        var inputs = new List<InferInput>(request.Inputs.Count);
        for (int i = 0; i < request.Inputs.Count; i++)
        {
            var t = request.Inputs[i];
            if (raw)
            {
                if (t.Contents is not null && HasContents(t.Contents))
                    throw ServingException.Invalid($"input '{WireTypes.Clip(t.Name)}': contents and raw_input_contents may not be mixed in one request");
                var bytes = request.RawInputContents[i];
                inputs.Add(new InferInput(t.Name, t.Datatype, t.Shape, (dt, dims, what) => TensorCodec.FromRaw(bytes.Span, dt, dims, what)));
            }
            else
            {
                var contents = t.Contents ?? new InferTensorContents();
                inputs.Add(new InferInput(t.Name, t.Datatype, t.Shape, (dt, dims, what) => TensorCodec.FromContents(contents, dt, dims, what)));
            }
        }
        var outputs = request.Outputs.Select(o =>
        {
            if (o.Parameters.ContainsKey("classification"))
                throw new ServingException(ServingErrorKind.Unimplemented, "the classification extension is not supported");
            return new RequestedOutput(o.Name, true);
        }).ToList();
        var result = await engine.InferAsync(request.ModelName, request.ModelVersion, inputs, outputs, binaryByDefault: true, context.CancellationToken).ConfigureAwait(false);
        var response = new ModelInferResponse { ModelName = result.Model.ModelName, ModelVersion = result.Model.VersionString, Id = request.Id };
        foreach (var o in result.Outputs)
        {
            response.Outputs.Add(new ModelInferResponse.Types.InferOutputTensor { Name = o.Name, Datatype = o.Datatype, Shape = { o.Shape } });
            response.RawOutputContents.Add(UnsafeByteOperations.UnsafeWrap(TensorCodec.ToRaw(o.Value)));
        }
        return response;
    });

    static bool HasContents(InferTensorContents c) =>
        c.BoolContents.Count + c.IntContents.Count + c.Int64Contents.Count + c.UintContents.Count + c.Uint64Contents.Count
        + c.Fp32Contents.Count + c.Fp64Contents.Count + c.BytesContents.Count > 0;

    public override Task<RepositoryIndexResponse> RepositoryIndex(RepositoryIndexRequest request, ServerCallContext context) => Guard(() =>
    {
        var r = new RepositoryIndexResponse();
        foreach (var row in repository.Index(request.Ready))
            r.Models.Add(new RepositoryIndexResponse.Types.ModelIndex { Name = row.Name, Version = row.Version ?? "", State = row.StateName, Reason = row.Reason });
        return r;
    });

    public override Task<RepositoryModelLoadResponse> RepositoryModelLoad(RepositoryModelLoadRequest request, ServerCallContext context) => Guard(async () =>
    {
        string? config = null;
        foreach (var (key, value) in request.Parameters)
        {
            if (key == "config" && value.ParameterChoiceCase == ModelRepositoryParameter.ParameterChoiceOneofCase.StringParam) config = value.StringParam;
            else if (key.StartsWith("file:", StringComparison.Ordinal))
                throw new ServingException(ServingErrorKind.Unimplemented, "loading model files sent in the request ('file:' parameters) is not supported");
            else throw ServingException.Invalid($"unknown or mistyped parameter '{WireTypes.Clip(key)}'");
        }
        await repository.LoadAsync(request.ModelName, config, context.CancellationToken).ConfigureAwait(false);
        return new RepositoryModelLoadResponse();
    });

    public override Task<RepositoryModelUnloadResponse> RepositoryModelUnload(RepositoryModelUnloadRequest request, ServerCallContext context) => Guard(async () =>
    {
        await repository.UnloadAsync(request.ModelName, context.CancellationToken).ConfigureAwait(false);
        return new RepositoryModelUnloadResponse();
    });
}
