from bridge.demo import run_demo


def test_demo_shows_the_payment_link_on_the_order(capsys):
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert "activation ping answered 200" in out
    assert "= order.amount 12.500 KWD" in out
    assert "Pay 12.500 KWD for this order with UPayments: http://127.0.0.1:" in out
    assert "9. The order is paid: status processing" in out
    assert "Payment confirmed with UPay: 12.500 KWD by knet" in out


def test_demo_runs_against_saleor(capsys):
    assert run_demo(store="saleor") == 0
    out = capsys.readouterr().out
    assert "token received" in out and "the bridge answered 200" in out
    assert "Pay 12.500 KWD for this order with UPayments" in out
    assert "CHARGE_SUCCESS reported: 12.5 KWD" in out and "charge status FULL" in out
