// attnforge's simulation model of Lattice ECP5's MULT18X18D, in the modes attnforge instantiates
// (hw/common/dsp.py): A and B from their parallel inputs, each optionally registered on CLK0
// (REG_INPUTA_CLK / REG_INPUTB_CLK), the 36-bit product optionally through the pipeline and the
// output register (REG_PIPELINE_CLK, REG_OUTPUT_CLK), every register on CE0 and RST0 with a
// synchronous reset, starting at zero. SIGNEDA/SIGNEDB say whether A/B are two's complement; each
// travels with its operand (registered with it). Yosys ships only a black box of this cell
// (cells_bb_ecp5.v); this model is written from the cell's documented behaviour and is checked
// against Python's product in tests/rtl/test_dsp_primitive.py. Any other mode (shift inputs,
// cascades, multiplier bypass, the C input, other clocks, enables or resets) stops the simulation.
`default_nettype none
module MULT18X18D (
    input wire A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input wire B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input wire CLK0, CE0, RST0,
    output wire P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output wire P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35
);
    // The cell's parameters (those the model ignores carry no meaning for a simulation: clock
    // dividers, the global set/reset, the shift mode of the unmodelled shift inputs).
    /* verilator lint_off UNUSEDPARAM */
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";
    /* verilator lint_on UNUSEDPARAM */

    localparam IN_A = REG_INPUTA_CLK == "CLK0";
    localparam IN_B = REG_INPUTB_CLK == "CLK0";
    localparam PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam OUT = REG_OUTPUT_CLK == "CLK0";

    // The modes this model knows; anything else is refused before the first cycle.
    initial begin
        if (!(IN_A || REG_INPUTA_CLK == "NONE") || !(IN_B || REG_INPUTB_CLK == "NONE")
                || !(PIPE || REG_PIPELINE_CLK == "NONE") || !(OUT || REG_OUTPUT_CLK == "NONE"))
            $fatal(1, "MULT18X18D model %m: registers clocked by CLK0 or NONE only");
        if (REG_INPUTC_CLK != "NONE")
            $fatal(1, "MULT18X18D model %m: the C input register is not modelled");
        if (REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0" || REG_OUTPUT_CE != "CE0"
                || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0" || REG_PIPELINE_RST != "RST0"
                || REG_OUTPUT_RST != "RST0")
            $fatal(1, "MULT18X18D model %m: clock enable CE0 and reset RST0 only");
        if (MULT_BYPASS != "DISABLED" || CAS_MATCH_REG != "FALSE" || RESETMODE != "SYNC"
                || HIGHSPEED_CLK != "NONE")
            $fatal(1, "MULT18X18D model %m: bypass, cascade match, asynchronous reset and the high-speed clock are not modelled");
    end

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};

    // Operand registers (stage 1), with their sign flags.
    reg [17:0] a_reg = 18'd0, b_reg = 18'd0;
    reg a_signed_reg = 1'b0, b_signed_reg = 1'b0;
    always @(posedge CLK0) begin
        if (SOURCEA || SOURCEB)
            $fatal(1, "MULT18X18D model %m: the shift inputs (SOURCEA/SOURCEB) are not modelled");
        if (RST0) begin
            a_reg <= 18'd0; b_reg <= 18'd0; a_signed_reg <= 1'b0; b_signed_reg <= 1'b0;
        end else if (CE0) begin
            a_reg <= a_in; b_reg <= b_in; a_signed_reg <= SIGNEDA; b_signed_reg <= SIGNEDB;
        end
    end
    wire [17:0] a = IN_A ? a_reg : a_in;
    wire [17:0] b = IN_B ? b_reg : b_in;
    wire a_signed = IN_A ? a_signed_reg : SIGNEDA;
    wire b_signed = IN_B ? b_signed_reg : SIGNEDB;

    // The 36-bit product of the two operands, each extended by its sign flag.
    wire [35:0] a_wide = {{18{a_signed & a[17]}}, a};
    wire [35:0] b_wide = {{18{b_signed & b[17]}}, b};
    wire [35:0] product = a_wide * b_wide;

    // Pipeline and output registers (each optional).
    reg [35:0] pipe_reg = 36'd0, out_reg = 36'd0;
    wire [35:0] piped = PIPE ? pipe_reg : product;
    always @(posedge CLK0) begin
        if (RST0) begin
            pipe_reg <= 36'd0; out_reg <= 36'd0;
        end else if (CE0) begin
            pipe_reg <= product; out_reg <= piped;
        end
    end
    wire [35:0] p = OUT ? out_reg : piped;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
            P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
`default_nettype wire
