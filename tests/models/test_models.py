from streams.models import Run


def test_input_text_of_responses_and_chat_requests():
    assert Run(request={"input": "hello"}).input_text == "hello"
    assert Run(request={"input": [{"role": "user", "content": "x"}]}).input_text == '[{"role": "user", "content": "x"}]'
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]}
    assert Run(request=chat).input_text == "second"
    assert Run(request={}).input_text == ""
