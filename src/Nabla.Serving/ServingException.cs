using Grpc.Core;

namespace Nabla.Serving;

/// <summary>What went wrong with a serving call; one kind maps to one HTTP status and one gRPC code.</summary>
public enum ServingErrorKind
{
    /// <summary>400 / INVALID_ARGUMENT: bad JSON, shape, datatype, size, name or parameter.</summary>
    InvalidArgument,
    /// <summary>404 / NOT_FOUND: unknown model or version.</summary>
    NotFound,
    /// <summary>413 / RESOURCE_EXHAUSTED: a body over the configured limit.</summary>
    PayloadTooLarge,
    /// <summary>501 / UNIMPLEMENTED.</summary>
    Unimplemented,
    /// <summary>503 / UNAVAILABLE: not ready, not loaded, draining.</summary>
    Unavailable,
    /// <summary>500 / INTERNAL: a bug or an unexpected failure.</summary>
    Internal,
}

/// <summary>A failed serving call; the message is sent to the client as <c>{"error": message}</c> or as the gRPC status detail.</summary>
public sealed class ServingException(ServingErrorKind kind, string message) : Exception(message)
{
    public ServingErrorKind Kind { get; } = kind;

    /// <summary>The failure reason counted in the statistics (null: <see cref="FailureReason.Other"/>).</summary>
    public FailureReason? Reason { get; init; }

    public int HttpStatus => Kind switch
    {
        ServingErrorKind.InvalidArgument => StatusCodes.Status400BadRequest,
        ServingErrorKind.NotFound => StatusCodes.Status404NotFound,
        ServingErrorKind.PayloadTooLarge => StatusCodes.Status413PayloadTooLarge,
        ServingErrorKind.Unimplemented => StatusCodes.Status501NotImplemented,
        ServingErrorKind.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status500InternalServerError,
    };

    public StatusCode GrpcStatus => Kind switch
    {
        ServingErrorKind.InvalidArgument => StatusCode.InvalidArgument,
        ServingErrorKind.NotFound => StatusCode.NotFound,
        ServingErrorKind.PayloadTooLarge => StatusCode.ResourceExhausted,
        ServingErrorKind.Unimplemented => StatusCode.Unimplemented,
        ServingErrorKind.Unavailable => StatusCode.Unavailable,
        _ => StatusCode.Internal,
    };

    public static ServingException Invalid(string message) => new(ServingErrorKind.InvalidArgument, message);
    public static ServingException NotFound(string message) => new(ServingErrorKind.NotFound, message);
    public static ServingException Unavailable(string message) => new(ServingErrorKind.Unavailable, message);
}
