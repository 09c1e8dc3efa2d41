using Nabla;
using Nabla.NN;
using Nabla.Optim;

// Fit y = 3x - 1 with a one-unit linear layer: the smallest end-to-end use of tensors, autograd and an optimizer.
Tensor.ManualSeed(0);
var x = Tensor.Randn(256, 1);
var y = x.Mul(3.0).Sub(1.0);
var model = new Linear(1, 1);
var opt = new SGD(model.Parameters(), lr: 0.1);
for (int step = 0; step < 200; step++)
{
    var loss = Losses.MseLoss(model.Forward(x), y);
    opt.ZeroGrad();
    loss.Backward();
    opt.Step();
    if (step % 50 == 0) Console.WriteLine($"step {step}: loss {loss.Item():0.000000}");
}
Console.WriteLine($"weight {model.Weight.Item():0.0000}, bias {model.Bias!.Item():0.0000}");
