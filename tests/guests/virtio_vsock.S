# Drives a virtio-vsock device in MMIO slot 0 from ring 3, as a tiny guest vsock stack:
#  1. guest-initiated: REQUEST to host port 1234, expect RESPONSE ("g-conn"), send
#     "hello-from-guest", print the reply ("g-rx=..."), SHUTDOWN, expect RST ("g-closed");
#  2. host-initiated: expect REQUEST to port 52 ("h-req"), answer RESPONSE, echo one RW packet
#     back ("h-echo=..."), expect SHUTDOWN when the host closes, answer RST ("h-closed").
# Any unexpected packet prints "bad-op=XX" and resets.
    .include "common.inc"
    .include "virtio.inc"

    .set RXB, 0x630000          # rx buffer i at RXB + i * 0x2000 (4096 + 44 bytes)
    .set TXB, 0x640000          # tx slot i at TXB + i * 0x100
    .set HDRBUF, 0x650000       # packet being built
    .set OP_REQUEST, 1
    .set OP_RESPONSE, 2
    .set OP_RST, 3
    .set OP_SHUTDOWN, 4
    .set OP_RW, 5

# mkhdr: EDI = op, ESI = src port, EDX = dst port, ECX = payload len, R8D = flags.
mkhdr:
    mov cid(%rip), %rax
    movq %rax, HDRBUF
    movq $2, HDRBUF + 8
    movl %esi, HDRBUF + 16
    movl %edx, HDRBUF + 20
    movl %ecx, HDRBUF + 24
    movw $1, HDRBUF + 28
    movw %di, HDRBUF + 30
    movl %r8d, HDRBUF + 32
    movl $65536, HDRBUF + 36
    mov fwd(%rip), %eax
    movl %eax, HDRBUF + 40
    ret

# tx_send: sends HDRBUF (44 bytes + its len field of payload) and waits for its completion.
tx_send:
    mov txn(%rip), %rbx
    and $7, %ebx
    mov %ebx, %edi
    shl $8, %edi
    add $TXB, %edi
    movl HDRBUF + 24, %ecx
    add $44, %ecx
    push %rcx
    push %rdi
    mov $HDRBUF, %esi
    call memcpy_small
    pop %rdx
    pop %rcx
    mov $1, %edi; mov %rbx, %rsi; mov $0, %r8d; mov $0, %r9d
    call vio_desc
    mov $1, %edi; mov %rbx, %rsi
    call vio_push
    incq txn(%rip)
    mov $1, %edi; mov txn(%rip), %rsi
    call vio_wait
    ret

# rx_next: waits for the next rx completion; R13 = its buffer, R14 = its descriptor index.
rx_next:
    incq rxn(%rip)
    mov $0, %edi; mov rxn(%rip), %rsi
    call vio_wait
    mov rxn(%rip), %rax
    dec %rax
    and $7, %eax
    mov $(QBASE + 0x2000 + 4), %edx
    movl (%rdx, %rax, 8), %r14d
    mov %r14d, %r13d
    shl $13, %r13d
    add $RXB, %r13d
    ret

# rx_done: gives buffer R14 back to the device.
rx_done:
    mov $0, %edi; mov %r14, %rsi
    call vio_push
    ret

# expect_op: AX = expected op of the packet at R13.
expect_op:
    cmpw %ax, 30(%r13)
    jne 1f
    ret
1:  lea m_badop(%rip), %rsi
    call puts
    movb 30(%r13), %al
    call puthex
    jmp reset

# print_payload: prints min(len, 32) payload bytes of the packet at R13.
print_payload:
    movl 24(%r13), %ecx
    cmp $32, %ecx
    jbe 1f
    mov $32, %ecx
1:  lea 44(%r13), %rsi
    call putn
    ret

user_main:
    mov $0xc0001000, %r15
    mov $3, %esi
    xor %r8d, %r8d
    call vio_init
    movl 0x100(%r15), %eax      # config: guest_cid (low half)
    mov %rax, cid(%rip)
    lea m_cid(%rip), %rsi
    call puts
    mov cid(%rip), %rax
    call puthex

    xor %r12d, %r12d            # post rx buffers 0..3
1:  mov $0, %edi; mov %r12, %rsi; mov %r12, %rdx; shl $13, %rdx; add $RXB, %rdx
    mov $(4096 + 44), %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    mov $0, %edi; mov %r12, %rsi
    call vio_push
    inc %r12d
    cmp $4, %r12d
    jne 1b

    # ---- 1. guest-initiated ----
    mov $OP_REQUEST, %edi; mov $1000, %esi; mov $1234, %edx; mov $0, %ecx; mov $0, %r8d
    call mkhdr
    call tx_send
    call rx_next
    mov $OP_RESPONSE, %ax
    call expect_op
    call rx_done
    lea m_gconn(%rip), %rsi
    call puts

    lea gmsg(%rip), %rsi
    mov $(HDRBUF + 44), %edi
    mov $16, %ecx
    call memcpy_small
    mov $OP_RW, %edi; mov $1000, %esi; mov $1234, %edx; mov $16, %ecx; mov $0, %r8d
    call mkhdr
    call tx_send
    call rx_next
    mov $OP_RW, %ax
    call expect_op
    movl 24(%r13), %eax
    add %eax, fwd(%rip)
    lea m_grx(%rip), %rsi
    call puts
    call print_payload
    call rx_done

    mov $OP_SHUTDOWN, %edi; mov $1000, %esi; mov $1234, %edx; mov $0, %ecx; mov $3, %r8d
    call mkhdr
    call tx_send
    call rx_next
    mov $OP_RST, %ax
    call expect_op
    call rx_done
    lea m_gclosed(%rip), %rsi
    call puts

    # ---- 2. host-initiated ----
    movq $0, fwd(%rip)
    call rx_next
    mov $OP_REQUEST, %ax
    call expect_op
    cmpl $52, 20(%r13)
    jne reset
    movl 16(%r13), %eax         # the host's port
    mov %rax, hport(%rip)
    call rx_done
    lea m_hreq(%rip), %rsi
    call puts
    mov $OP_RESPONSE, %edi; mov $52, %esi; mov hport(%rip), %rdx; mov $0, %ecx; mov $0, %r8d
    call mkhdr
    call tx_send

    call rx_next
    mov $OP_RW, %ax
    call expect_op
    movl 24(%r13), %ecx         # echo the payload back
    cmp $64, %ecx
    jbe 2f
    mov $64, %ecx
2:  mov %ecx, %r12d
    add %ecx, fwd(%rip)
    lea 44(%r13), %rsi
    mov $(HDRBUF + 44), %edi
    call memcpy_small
    lea m_hecho(%rip), %rsi
    call puts
    call print_payload
    call rx_done
    mov $OP_RW, %edi; mov $52, %esi; mov hport(%rip), %rdx; mov %r12d, %ecx; mov $0, %r8d
    call mkhdr
    call tx_send

    call rx_next
    mov $OP_SHUTDOWN, %ax
    call expect_op
    call rx_done
    mov $OP_RST, %edi; mov $52, %esi; mov hport(%rip), %rdx; mov $0, %ecx; mov $0, %r8d
    call mkhdr
    call tx_send
    lea m_hclosed(%rip), %rsi
    call puts
    lea m_done(%rip), %rsi
    call puts
    jmp reset

    .balign 8
cid:    .quad 0
fwd:    .quad 0
hport:  .quad 0
txn:    .quad 0
rxn:    .quad 0
gmsg:
    .ascii "hello-from-guest"
m_cid:
    .asciz "cid="
m_gconn:
    .asciz "\ng-conn"
m_grx:
    .asciz "\ng-rx="
m_gclosed:
    .asciz "\ng-closed"
m_hreq:
    .asciz "\nh-req"
m_hecho:
    .asciz "\nh-echo="
m_hclosed:
    .asciz "\nh-closed"
m_done:
    .asciz "\ndone\n"
m_badop:
    .asciz "\nbad-op="
