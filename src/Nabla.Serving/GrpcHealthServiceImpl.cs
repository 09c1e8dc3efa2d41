using Grpc.Core;
using Nabla.Serving.Health;

namespace Nabla.Serving;

/// <summary>
/// <c>grpc.health.v1.Health</c> for the whole server ("") and for <c>inference.GRPCInferenceService</c>: SERVING when
/// ready, NOT_SERVING while models load and while draining; other service names are NOT_FOUND (Check) or
/// SERVICE_UNKNOWN (Watch).
/// </summary>
public sealed class GrpcHealthServiceImpl(ServerState state) : Nabla.Serving.Health.Health.HealthBase
{
    public const string InferenceServiceName = "inference.GRPCInferenceService";

    static bool Known(string service) => service is "" or InferenceServiceName;

    HealthCheckResponse.Types.ServingStatus Current(string service) =>
        !Known(service) ? HealthCheckResponse.Types.ServingStatus.ServiceUnknown
        : state.Ready ? HealthCheckResponse.Types.ServingStatus.Serving
        : HealthCheckResponse.Types.ServingStatus.NotServing;

    public override Task<HealthCheckResponse> Check(HealthCheckRequest request, ServerCallContext context)
    {
        if (!Known(request.Service)) throw new RpcException(new Status(StatusCode.NotFound, $"unknown service '{WireTypes.Clip(request.Service)}'"));
        return Task.FromResult(new HealthCheckResponse { Status = Current(request.Service) });
    }

    public override async Task Watch(HealthCheckRequest request, IServerStreamWriter<HealthCheckResponse> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        HealthCheckResponse.Types.ServingStatus? last = null;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                var next = state.NextChange;
                var now = Current(request.Service);
                if (now != last)
                {
                    await responseStream.WriteAsync(new HealthCheckResponse { Status = now }, ct).ConfigureAwait(false);
                    last = now;
                }
                // NOTE: a watch held open would keep shutdown waiting for the drain timeout; it ends once draining begins.
                if (state.Draining) return;
                await next.WaitAsync(ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }
}
